using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using CsCheck;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>
/// Thousands of random and mutated bodies at both POST endpoints: every answer is below 500 and the process lives.
/// A third of the bodies carry valid credentials so that the field validation (after authentication) is exercised.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class FuzzTests(GatewayFixture fx)
{
    private static readonly string[] Keys =
    [
        "partner_api_key", "client_secret", "cohort_id", "cohort_changes", "user_ids", "device_ids", "aliases",
        "should_remove", "alias_name", "alias_label", "name", "created_at",
    ];

    private static readonly Gen<string> Leaf = Gen.OneOf(
        Gen.Const("null"), Gen.Const("true"), Gen.Const("false"), Gen.Const("\"\""),
        Gen.Int.Select(i => i.ToString(CultureInfo.InvariantCulture)),
        Gen.Double.Select(d => double.IsFinite(d) ? d.ToString("R", CultureInfo.InvariantCulture) : "1e308"),
        Gen.String.Select(s => JsonSerializer.Serialize(s)),
        Gen.Const("\"2026-11-22T19:20:30Z\""),
        Gen.Int[0, 600].Select(n => JsonSerializer.Serialize(new string('x', n))));

    private static readonly Gen<string> Key = Gen.Frequency((4, Gen.OneOf(Keys)), (1, Gen.String));

    private static Gen<string> Value(int depth) => depth == 0
        ? Leaf
        : Gen.Frequency(
            (3, Leaf),
            (1, Value(depth - 1).Array[0, 5].Select(a => "[" + string.Join(",", a) + "]")),
            (2, Gen.Select(Key, Value(depth - 1)).Array[0, 5]
                .Select(a => "{" + string.Join(",", a.Select(p => JsonSerializer.Serialize(p.Item1) + ":" + p.Item2)) + "}")));

    /// <summary>A partner-shaped body: the expected keys with random values, sometimes real credentials.</summary>
    private Gen<string> Structured() =>
        Gen.Select(Gen.Bool, Gen.Int[0, 2], Value(3), Value(3), Value(2).Array[0, 4], Gen.Bool)
            .Select((realCredentials, changesKind, cohortId, name, changes, remove) =>
            {
                var credentials = realCredentials
                    ? $"\"partner_api_key\": {JsonSerializer.Serialize(fx.PartnerApiKey)}, \"client_secret\": {JsonSerializer.Serialize(fx.ClientSecret)}"
                    : "\"partner_api_key\": \"k\", \"client_secret\": \"s\"";
                var changeObjects = changes.Select(c =>
                    $"{{\"user_ids\": {c}, \"device_ids\": [{c}], \"aliases\": [{{\"alias_name\": {c}, \"alias_label\": \"l\"}}], \"should_remove\": {(remove ? "true" : "null")}}}");
                var cohortChanges = changesKind switch
                {
                    0 => "[" + string.Join(",", changeObjects) + "]",
                    1 => "[" + string.Join(",", changes) + "]",
                    _ => changes.Length > 0 ? changes[0] : "[]",
                };
                return $"{{{credentials}, \"cohort_id\": {cohortId}, \"name\": {name}, \"created_at\": {cohortId}, \"cohort_changes\": {cohortChanges}}}";
            });

    /// <summary>A valid body with a few random byte edits (flip, delete, insert, truncate).</summary>
    private Gen<byte[]> Mutated() =>
        Gen.Select(Gen.Int[0, int.MaxValue].Array[1, 6], Gen.Byte.Array[1, 6], Gen.Int[0, 3].Array[1, 6])
            .Select((positions, bytes, ops) =>
            {
                var body = Encoding.UTF8.GetBytes(PartnerHttp.ChangesBody(fx.PartnerApiKey, fx.ClientSecret,
                    """[{"user_ids": ["u1", "u2"], "device_ids": null, "aliases": [{"alias_name": "a", "alias_label": "b"}], "should_remove": false}]"""))
                    .ToList();
                for (var i = 0; i < positions.Length; i++)
                {
                    if (body.Count == 0)
                    {
                        break;
                    }

                    var at = positions[i] % body.Count;
                    var b = bytes[i % bytes.Length];
                    switch (ops[i % ops.Length])
                    {
                        case 0: body[at] = b; break;
                        case 1: body.RemoveAt(at); break;
                        case 2: body.Insert(at, b); break;
                        default: body.RemoveRange(at, body.Count - at); break;
                    }
                }

                return body.ToArray();
            });

    [Fact]
    public async Task Post_RandomAndMutatedBodies_NeverAnswer5xx()
    {
        var bodies = Gen.Frequency(
            (2, Structured().Select(Encoding.UTF8.GetBytes)),
            (2, Mutated()),
            (1, Value(4).Select(Encoding.UTF8.GetBytes)),
            (1, Gen.Byte.Array[0, 300]));
        var count = 0;

        await Gen.Select(bodies, Gen.Bool).SampleAsync(async (body, toChanges) =>
        {
            Interlocked.Increment(ref count);
            var path = toChanges ? PartnerHttp.ChangesPath : PartnerHttp.NamePath;
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = new("application/json");
            using var response = await fx.Gateway.Client.PostAsync(path, content);
            var status = (int)response.StatusCode;
            if (status >= 500 || (status != 202 && !(await response.Content.ReadAsStringAsync()).Contains("\"message\"", StringComparison.Ordinal)))
            {
                throw new InvalidOperationException($"{status} for {Encoding.UTF8.GetString(body)}");
            }
        }, iter: 3000, threads: 4);

        Assert.True(count >= 3000);
        Assert.False(fx.Gateway.HasExited);
        Assert.Equal(HttpStatusCode.OK, (await fx.Gateway.Client.GetAsync("health/live")).StatusCode);
    }
}
