using System.Net;
using System.Text;
using CohortBridge.Contracts;
using CohortBridge.Testing;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>Helpers for the snapshot endpoint: streamed bodies and the chunks the recorder saw.</summary>
public static class SnapshotHttp
{
    public static string MembersPath(string cohortId) =>
        $"partners/{GatewayFixture.Partner}/cohorts/{Uri.EscapeDataString(cohortId)}/members";

    public static HttpRequestMessage Put(string cohortId, HttpContent content, string apiKey, string secret)
    {
        var request = PartnerHttp.WithCredentials(HttpMethod.Put, MembersPath(cohortId), apiKey, secret);
        request.Content = content;
        return request;
    }

    /// <summary>Adds an <c>Idempotency-Key</c> exactly as given (no client-side header validation, so invalid keys go out too).</summary>
    public static HttpRequestMessage WithIdempotencyKey(this HttpRequestMessage request, string key)
    {
        request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        return request;
    }

    /// <summary>A gateway replica of the fixture that need only be live (not ready: its broker may be unreachable).</summary>
    public static async Task<ServiceProcess> StartLiveGatewayAsync(GatewayFixture fx, IReadOnlyDictionary<string, string> overrides)
    {
        var gateway = await fx.StartGatewayAsync(overrides, waitUntilReady: false);
        await Eventually.UntilAsync(async () =>
        {
            try
            {
                return (await gateway.Client.GetAsync("health/live")).IsSuccessStatusCode;
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(60), "gateway live");
        return gateway;
    }

    public static HttpContent Body(string text, string contentType) =>
        new StringContent(text, Encoding.UTF8, new System.Net.Http.Headers.MediaTypeHeaderValue(contentType));

    /// <summary>The chunk messages of one cohort id seen on the bus, ordered by sequence.</summary>
    public static List<CohortExportReceived> ChunksOf(GatewayFixture fx, string cohortId) =>
        [.. fx.Published.Values.SelectMany(b => b.Select(p => p.Message))
            .Where(m => m.CohortId == cohortId && m.Kind == CohortExportKind.SnapshotChunk)
            .OrderBy(m => m.Snapshot!.Sequence)];

    public static int Identifiers(SnapshotChunk c) =>
        c.ExternalIds.Count + c.DeviceIds.Count + c.Aliases.Count + c.InvalidIdentifiers.Count;
}

/// <summary>
/// A chunked request body written line by line; with <c>breakOff</c> it flushes, waits for that callback (for example
/// until the gateway published a chunk) and then fails the way a client that goes away does.
/// </summary>
public sealed class StreamedLines(IEnumerable<string> lines, string contentType, Func<Task>? breakOff = null) : HttpContent
{
    private readonly IEnumerable<string> _lines = lines;
    private readonly Func<Task>? _breakOff = breakOff;

    public StreamedLines Typed()
    {
        Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(contentType);
        return this;
    }

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
    {
        var buffer = new StringBuilder();
        foreach (var line in _lines)
        {
            buffer.Append(line).Append('\n');
            if (buffer.Length > 32 * 1024)
            {
                await stream.WriteAsync(Encoding.UTF8.GetBytes(buffer.ToString()));
                buffer.Clear();
            }
        }

        await stream.WriteAsync(Encoding.UTF8.GetBytes(buffer.ToString()));
        if (_breakOff is not null)
        {
            await stream.FlushAsync();
            await _breakOff();
            throw new IOException("the partner's connector went away");
        }
    }

    protected override bool TryComputeLength(out long length)
    {
        length = 0;
        return false;
    }
}
