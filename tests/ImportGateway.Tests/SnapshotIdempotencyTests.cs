using System.Globalization;
using System.Net;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using Dapper;
using Npgsql;
using static CohortBridge.ImportGateway.Tests.PartnerHttp;
using static CohortBridge.ImportGateway.Tests.SnapshotHttp;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>
/// <c>Idempotency-Key</c> on the snapshot PUT, against real gateway processes and the recording bus: a retry answers
/// the first import id and withdraws its own chunks (Aborted marker, never a last chunk), another request under the same
/// key is 409, an invalid key is 400 before the body is read, and a key whose first attempt failed is taken over by
/// the import that actually gets published.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SnapshotIdempotencyTests(GatewayFixture fx)
{
    private const string NdJsonType = "application/x-ndjson";

    private static string NewCohort() => "idem-snap-" + Guid.NewGuid().ToString("N")[..8];

    private static IEnumerable<string> Lines(int count, string prefix = "u") =>
        Enumerable.Range(0, count).Select(i => $$"""{"external_id":"{{prefix}}{{i}}"}""");

    private Task<Reply> PutAsync(HttpClient client, string cohortId, HttpContent content, string key) =>
        SendAsync(client, Put(cohortId, content, fx.PartnerApiKey, fx.ClientSecret).WithIdempotencyKey(key));

    private Task<ServiceProcess> SmallChunkGatewayAsync() =>
        fx.StartGatewayAsync(new Dictionary<string, string> { ["Gateway__SnapshotChunkSize"] = "100" });

    /// <summary>Waits until the chunks of every import of the cohort other than <paramref name="keep"/> end in an abort marker.</summary>
    private async Task<List<CohortExportReceived>> WaitForWithdrawnAsync(string cohortId, Guid keep, int withdrawnImports) =>
        await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohortId)), chunks =>
            chunks.Where(c => c.ImportId != keep).GroupBy(c => c.ImportId).Count(g => g.Any(c => c.Snapshot!.Aborted)) == withdrawnImports
            && chunks.Any(c => c.ImportId == keep && c.Snapshot!.IsLast),
            because: $"{withdrawnImports} repeated import(s) withdrawn and the first one complete");

    [Fact]
    public async Task PutMembers_SameKeySameBody_ReturnsFirstImportIdAndWithdrawsTheRepeat()
    {
        await using var gateway = await SmallChunkGatewayAsync();
        var cohort = NewCohort();
        var key = Guid.NewGuid().ToString();

        var first = await PutAsync(gateway.Client, cohort, new StreamedLines(Lines(250), NdJsonType).Typed(), key);
        var retry = await PutAsync(gateway.Client, cohort, new StreamedLines(Lines(250), NdJsonType).Typed(), key);
        // The other replica (one chunk of 10,000: the whole body is the last chunk, which it never publishes).
        var otherReplica = await PutAsync(fx.Gateway.Client, cohort, new StreamedLines(Lines(250), NdJsonType).Typed(), key);

        Assert.Equal(HttpStatusCode.Accepted, first.Status);
        Assert.Equal(HttpStatusCode.Accepted, retry.Status);
        Assert.Equal(HttpStatusCode.Accepted, otherReplica.Status);
        Assert.Equal(first.ImportId, retry.ImportId);
        Assert.Equal(first.ImportId, otherReplica.ImportId);
        Assert.Equal("success", retry.Message);
        Assert.Equal("true", retry.Headers.GetValues("Idempotent-Replayed").Single());
        var chunks = await WaitForWithdrawnAsync(cohort, first.ImportId, withdrawnImports: 1);
        var applied = chunks.Where(c => c.ImportId == first.ImportId).Select(c => c.Snapshot!).ToList();
        Assert.Equal([0, 1, 2], applied.Select(c => c.Sequence));
        Assert.Equal(3, applied[2].ChunkCount);
        Assert.DoesNotContain(applied, c => c.Aborted);
        // The repeat staged its first two chunks while streaming; it withdraws them and never sends a last chunk.
        var repeat = chunks.Where(c => c.ImportId != first.ImportId).Select(c => c.Snapshot!).ToList();
        Assert.Equal([0, 1, 2], repeat.Select(c => c.Sequence));
        Assert.True(repeat[2].Aborted);
        Assert.False(string.IsNullOrEmpty(repeat[2].AbortReason));
        Assert.DoesNotContain(repeat, c => c.IsLast);
        Assert.Single(chunks, c => c.Snapshot!.IsLast);
    }

    [Theory]
    [InlineData("other members")]
    [InlineData("other cohort")]
    [InlineData("key first used on a POST")]
    public async Task PutMembers_SameKeyOtherRequest_Returns409AndWithdrawsItsChunks(string difference)
    {
        await using var gateway = await SmallChunkGatewayAsync();
        var cohort = NewCohort();
        var key = Guid.NewGuid().ToString();
        if (difference == "key first used on a POST")
        {
            var post = await PostAsync(fx.Gateway.Client, ChangesPath,
                ChangesBody(fx.PartnerApiKey, fx.ClientSecret, """[{"user_ids": ["p1"]}]""", cohort), idempotencyKey: key);
            Assert.Equal(HttpStatusCode.Accepted, post.Status);
        }
        else
        {
            var first = await PutAsync(gateway.Client, cohort, new StreamedLines(Lines(150), NdJsonType).Typed(), key);
            Assert.Equal(HttpStatusCode.Accepted, first.Status);
        }

        var target = difference == "other cohort" ? NewCohort() : cohort;
        var lines = difference == "other members" ? Lines(150, prefix: "v") : Lines(150);
        var other = await PutAsync(gateway.Client, target, new StreamedLines(lines, NdJsonType).Typed(), key);

        Assert.Equal(HttpStatusCode.Conflict, other.Status);
        Assert.Equal("Idempotency-Key was already used with a different request body", other.Message);
        // Its first chunk went out while it streamed: withdrawn, and no last chunk.
        var chunks = await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, target)), c => c.Any(m => m.Snapshot!.Aborted),
            because: "the conflicting request's chunks are withdrawn");
        var withdrawn = chunks.Single(c => c.Snapshot!.Aborted).ImportId;
        Assert.Equal([0, 1], chunks.Where(c => c.ImportId == withdrawn).Select(c => c.Snapshot!.Sequence));
        Assert.DoesNotContain(chunks, c => c.ImportId == withdrawn && c.Snapshot!.IsLast);
    }

    [Theory]
    [InlineData("has a space", """{"external_id":"u1"}""")]
    [InlineData("256", "this body is not NDJSON, and is never read")]
    public async Task PutMembers_InvalidKey_Returns400BeforeReadingTheBody(string key, string body)
    {
        var cohort = NewCohort();
        var sent = key == "256" ? new string('k', 256) : key;

        var reply = await PutAsync(fx.Gateway.Client, cohort, Body(body + "\n", NdJsonType), sent);
        // A valid snapshot afterwards is the only import of the cohort that reaches the bus.
        var valid = await SendAsync(fx.Gateway.Client, Put(cohort, Body("{\"external_id\":\"u2\"}\n", NdJsonType), fx.PartnerApiKey, fx.ClientSecret));

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal("Idempotency-Key must be 1 to 255 visible ASCII characters", reply.Message);
        Assert.Equal(HttpStatusCode.Accepted, valid.Status);
        var chunks = await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count >= 1);
        Assert.All(chunks, c => Assert.Equal(valid.ImportId, c.ImportId));
    }

    [Fact]
    public async Task PutMembers_ConcurrentDuplicates_OneImportCompletesTheOthersReplayIt()
    {
        await using var gateway = await SmallChunkGatewayAsync();
        var cohort = NewCohort();
        var key = Guid.NewGuid().ToString();

        var replies = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ =>
            PutAsync(gateway.Client, cohort, new StreamedLines(Lines(250), NdJsonType).Typed(), key)));

        Assert.All(replies, r => Assert.Equal(HttpStatusCode.Accepted, r.Status));
        var importId = Assert.Single(replies.Select(r => r.ImportId).Distinct());
        var chunks = await WaitForWithdrawnAsync(cohort, importId, withdrawnImports: 3);
        Assert.Equal(importId, Assert.Single(chunks, c => c.Snapshot!.IsLast).ImportId);
    }

    [Fact]
    public async Task PutMembers_RetryAfterUnconfirmedLastChunk_TakesTheKeyOverWithItsOwnImportId()
    {
        var cohort = NewCohort();
        var key = Guid.NewGuid().ToString();
        const string body = "external_id\nt1\nt2\n";
        await using (var busDown = await StartLiveGatewayAsync(fx, new Dictionary<string, string>
        {
            ["RabbitMq__Port"] = ServiceProcess.FreePort().ToString(CultureInfo.InvariantCulture),
            ["Gateway__PublishTimeout"] = "00:00:02",
            ["Gateway__PublishAttemptTimeout"] = "00:00:01",
        }))
        {
            var failed = await PutAsync(busDown.Client, cohort, Body(body, "text/csv"), key);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, failed.Status);
        }

        var retry = await PutAsync(fx.Gateway.Client, cohort, Body(body, "text/csv"), key);
        var replay = await PutAsync(fx.Gateway.Client, cohort, Body(body, "text/csv"), key);

        Assert.Equal(HttpStatusCode.Accepted, retry.Status);
        Assert.Equal(HttpStatusCode.Accepted, replay.Status);
        // The key now names the import whose last chunk went out, not the failed attempt's.
        Assert.Equal(retry.ImportId, replay.ImportId);
        var last = Assert.Single(await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count >= 1));
        Assert.Equal(retry.ImportId, last.ImportId);
        Assert.True(last.Snapshot!.IsLast);
        Assert.Equal(["t1", "t2"], last.Snapshot.ExternalIds);
        await using var conn = new NpgsqlConnection(fx.Infrastructure.ConnectionStringFor(fx.GatewayDatabase));
        var record = await conn.QuerySingleAsync<(Guid ImportId, string State)>(
            "SELECT import_id, state FROM idempotency_records WHERE workspace_id = @ws AND idempotency_key = @key",
            new { ws = fx.Workspace, key });
        Assert.Equal((retry.ImportId, "completed"), record);
    }
}

/// <summary>
/// End to end (KeyService + gateway + CohortService, chunks of 100): a snapshot repeated with the same
/// <c>Idempotency-Key</c> is applied once, even when another import changed the cohort in between (applying the repeat
/// would undo that change).
/// </summary>
public sealed class SnapshotIdempotencyEndToEndTests(SnapshotPlatform platform) : IClassFixture<SnapshotPlatform>
{
    [Fact]
    public async Task Snapshot_RetriedWithSameKey_AppliedOnceMembersExact()
    {
        await platform.UpsertUsersAsync(Enumerable.Range(0, 300).Select(i => $$"""{"external_id":"e{{i}}"}"""));
        const string cohort = "idempotent-weekly";
        var key = Guid.NewGuid().ToString();
        HttpContent Snapshot() => new StreamedLines(Enumerable.Range(0, 150).Select(i => $$"""{"external_id":"e{{i}}"}"""), "application/x-ndjson").Typed();
        Task<Reply> PutWithKeyAsync() =>
            SendAsync(platform.Gateway.Client, Put(cohort, Snapshot(), platform.PartnerApiKey, platform.ClientSecret).WithIdempotencyKey(key));

        var first = await PutWithKeyAsync();
        Assert.Equal(HttpStatusCode.Accepted, first.Status);
        Assert.Equal("completed", (await platform.WaitForImportAsync(first.ImportId)).GetProperty("status").GetString());
        var change = await PostAsync(platform.Gateway.Client, ChangesPath,
            ChangesBody(platform.PartnerApiKey, platform.ClientSecret, """[{"user_ids": ["e299"]}]""", cohort));
        Assert.Equal("completed", (await platform.WaitForImportAsync(change.ImportId)).GetProperty("status").GetString());

        var retry = await PutWithKeyAsync();

        Assert.Equal(HttpStatusCode.Accepted, retry.Status);
        Assert.Equal(first.ImportId, retry.ImportId);
        // The retry's own import (its first chunk was staged while it streamed) ends failed and changed nothing.
        var repeat = await Eventually.UntilAsync(async () =>
        {
            await using var conn = new NpgsqlConnection(platform.CohortsConnectionString);
            return (await conn.QueryAsync<(Guid ImportId, string Status, string? Error)>(
                "SELECT import_id, status, error FROM imports WHERE workspace_id = @ws AND cohort_id = @cohort AND import_id <> ALL(@known)",
                new { ws = platform.Workspace, cohort, known = new[] { first.ImportId, change.ImportId } })).ToList();
        }, r => r.Count == 1 && r[0].Status == "failed", TimeSpan.FromSeconds(30), "the repeat's staged chunks are discarded");
        Assert.Contains(first.ImportId.ToString(), repeat[0].Error, StringComparison.Ordinal);
        var (members, version) = await platform.MembersAsync(cohort);
        Assert.Equal(2, version);
        Assert.True(members.SetEquals(Enumerable.Range(0, 150).Select(i => $"e{i}").Append("e299")));
    }
}
