using System.Net;
using System.Text;
using CohortBridge.Testing;
using static CohortBridge.ImportGateway.Tests.PartnerHttp;
using static CohortBridge.ImportGateway.Tests.SnapshotHttp;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>
/// The snapshot endpoint of a real gateway process: streaming, chunking, the final marker, invalid lines, 400/415,
/// and the abort marker when the client goes away. What CohortService does with the chunks is tested end to end in
/// SnapshotEndToEndTests.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SnapshotGatewayTests(GatewayFixture fx)
{
    private static string NewCohort() => "snap-" + Guid.NewGuid().ToString("N")[..8];

    private Task<Reply> PutAsync(HttpClient client, string cohortId, HttpContent content) =>
        SendAsync(client, Put(cohortId, content, fx.PartnerApiKey, fx.ClientSecret));

    private async Task<ServiceProcess> SmallChunkGatewayAsync(int chunkSize = 100, long? maxBytes = null)
    {
        var overrides = new Dictionary<string, string> { ["Gateway__SnapshotChunkSize"] = chunkSize.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        if (maxBytes is { } max)
        {
            overrides["Gateway__MaxSnapshotBytes"] = max.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        return await fx.StartGatewayAsync(overrides);
    }

    [Fact]
    public async Task PutMembers_MultiChunkNdJson_PublishesChunksInOrderWithFinalMarker()
    {
        await using var gateway = await SmallChunkGatewayAsync();
        var cohort = NewCohort();
        var lines = Enumerable.Range(0, 250).Select(i => (i % 3) switch
        {
            0 => $$"""{"external_id":"u{{i}}"}""",
            1 => $$"""{"device_id":"d{{i}}"}""",
            _ => $$"""{"alias_name":"email","alias_label":"a{{i}}@x"}""",
        });

        var reply = await PutAsync(gateway.Client, cohort, new StreamedLines(lines, "application/x-ndjson").Typed());

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        Assert.Equal("success", reply.Message);
        var chunks = await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count == 3, because: "three chunks");
        Assert.All(chunks, c => Assert.Equal(reply.ImportId, c.ImportId));
        Assert.Equal([0, 1, 2], chunks.Select(c => c.Snapshot!.Sequence));
        Assert.Equal([100, 100, 50], chunks.Select(c => Identifiers(c.Snapshot!)));
        Assert.Equal([false, false, true], chunks.Select(c => c.Snapshot!.IsLast));
        Assert.Equal(3, chunks[2].Snapshot!.ChunkCount);
        Assert.Null(chunks[0].Snapshot!.ChunkCount);
        Assert.Equal(84, chunks.Sum(c => c.Snapshot!.ExternalIds.Count));
        Assert.Equal("a2@x", chunks[0].Snapshot!.Aliases[0].AliasLabel);
        Assert.All(chunks, c => Assert.False(c.Snapshot!.Aborted));
        // Each chunk is its own message (distinct message ids) of the one import.
        var ids = fx.Published[reply.ImportId].Select(p => p.MessageId).Distinct().Count();
        Assert.Equal(3, ids);
    }

    [Theory]
    [InlineData("external_id\nu1\n\"u,2\"\n", 2, 0, 0)]
    [InlineData("Device_ID\r\nd1\r\nd2\r\nd3\r\n", 0, 3, 0)]
    [InlineData("alias_label,alias_name\nl1,n1\n\"l2\",n2\n", 0, 0, 2)]
    [InlineData("\uFEFFexternal_id,segment\nu1,gold\n", 1, 0, 0)]
    public async Task PutMembers_CsvHeaderForms_ReadTheNamedColumns(string csv, int externalIds, int deviceIds, int aliases)
    {
        var cohort = NewCohort();

        var reply = await PutAsync(fx.Gateway.Client, cohort, Body(csv, "text/csv"));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var chunk = Assert.Single(await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count == 1)).Snapshot!;
        Assert.True(chunk.IsLast);
        Assert.Equal(1, chunk.ChunkCount);
        Assert.Equal(externalIds, chunk.ExternalIds.Count);
        Assert.Equal(deviceIds, chunk.DeviceIds.Count);
        Assert.Equal(aliases, chunk.Aliases.Count);
        Assert.Empty(chunk.InvalidIdentifiers);
        if (externalIds == 2)
        {
            Assert.Equal(["u1", "u,2"], chunk.ExternalIds);
        }

        if (aliases == 2)
        {
            Assert.Equal("n2", chunk.Aliases[1].AliasName);
            Assert.Equal("l2", chunk.Aliases[1].AliasLabel);
        }
    }

    [Fact]
    public async Task PutMembers_CsvWithSpacesAroundFields_ReadsTheValuesAsTheHeader()
    {
        // The header "external_id, device_id" was read trimmed but its rows were not: " d1" matched no device, and a
        // snapshot removes the users it does not match. A quoted value keeps its own spaces.
        var cohort = NewCohort();
        const string csv = "external_id, device_id\nu1, d1\n  u2\t,  \" d 2 \"  \nu3 ,\n";

        var reply = await PutAsync(fx.Gateway.Client, cohort, Body(csv, "text/csv"));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var chunk = Assert.Single(await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count == 1)).Snapshot!;
        Assert.Equal(["u1", "u2", "u3"], chunk.ExternalIds);
        Assert.Equal(["d1", " d 2 "], chunk.DeviceIds);
        Assert.Empty(chunk.InvalidIdentifiers);
    }

    [Fact]
    public async Task PutMembers_BadLines_CountedAsInvalidNotFatal()
    {
        var cohort = NewCohort();
        const string body = """
            {"external_id":"ok-1"}
            {"external_id": 42}
            not json at all
            {"device_id":"d1","external_id":"both"}
            {"alias_name":"only-name"}

            {"external_id":"ok-2","note":"extra properties are ignored"}
            ["an array"]
            """;

        var reply = await PutAsync(fx.Gateway.Client, cohort, Body(body, "application/x-ndjson"));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var chunk = Assert.Single(await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count == 1)).Snapshot!;
        Assert.Equal(["ok-1", "ok-2"], chunk.ExternalIds);
        Assert.Equal(5, chunk.InvalidIdentifiers.Count);
        Assert.Contains("not json at all", chunk.InvalidIdentifiers);
    }

    [Fact]
    public async Task PutMembers_StringsWithoutValidUnicodeAndNestedColumns_CountedNotFatal()
    {
        // Undecodable strings used to answer 500 with no abort marker; a first line with nested columns used to be 400.
        var cohort = NewCohort();
        var body = Encoding.UTF8.GetBytes("""
            {"external_id":"ok-1","traits":{"a":{"b":{"c":{"d":[1]}}}}}
            {"external_id":"\ud800"}
            {"device_id":"caf#"}
            {"alias_name":"\udc00x","alias_label":"l"}
            {"external_id":"ok-2"}
            """).Select(b => b == (byte)'#' ? (byte)0xE9 : b).ToArray();
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/x-ndjson");

        var reply = await PutAsync(fx.Gateway.Client, cohort, content);

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var chunk = Assert.Single(await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count == 1)).Snapshot!;
        Assert.Equal(["ok-1", "ok-2"], chunk.ExternalIds);
        Assert.Empty(chunk.DeviceIds);
        Assert.Equal(3, chunk.InvalidIdentifiers.Count);
    }

    [Theory]
    [InlineData("text/csv", "email,name\na@x,A\n", "CSV header must name the column external_id, device_id, or alias_name and alias_label")]
    [InlineData("text/csv", "alias_name\nn1\n", "CSV header must name the column external_id, device_id, or alias_name and alias_label")]
    // No header row at all (an empty export file): not a snapshot that empties the cohort.
    [InlineData("text/csv", "", "CSV header must name the column external_id, device_id, or alias_name and alias_label")]
    [InlineData("text/csv", "\r\n\n", "CSV header must name the column external_id, device_id, or alias_name and alias_label")]
    [InlineData("application/x-ndjson", "external_id\nu1\n", "request body must be NDJSON: one JSON object per line")]
    public async Task PutMembers_NotNdJsonOrCsv_Returns400AndPublishesNothing(string contentType, string body, string message)
    {
        var cohort = NewCohort();

        var reply = await PutAsync(fx.Gateway.Client, cohort, Body(body, contentType));

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal(message, reply.Message);
        // A later valid snapshot of the same cohort is the only import of it the bus ever sees.
        var valid = await PutAsync(fx.Gateway.Client, cohort, Body("external_id\nu1\n", "text/csv"));
        Assert.Equal(HttpStatusCode.Accepted, valid.Status);
        var chunks = await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count >= 1);
        Assert.All(chunks, c => Assert.Equal(valid.ImportId, c.ImportId));
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("text/plain")]
    public async Task PutMembers_WrongContentType_Returns415NamingBothTypes(string contentType)
    {
        var reply = await PutAsync(fx.Gateway.Client, NewCohort(), Body("{\"external_id\":\"u1\"}\n", contentType));

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, reply.Status);
        Assert.Equal("content type must be application/x-ndjson or text/csv", reply.Message);
    }

    [Fact]
    public async Task PutMembers_EmptySnapshot_PublishesOneEmptyLastChunk()
    {
        var cohort = NewCohort();

        var reply = await PutAsync(fx.Gateway.Client, cohort, Body("", "application/x-ndjson"));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var chunk = Assert.Single(await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Count == 1)).Snapshot!;
        Assert.True(chunk.IsLast);
        Assert.Equal(0, Identifiers(chunk));
    }

    [Fact]
    public async Task PutMembers_ClientDisconnectsMidBody_PublishesAbortedChunkAndNo202()
    {
        await using var gateway = await SmallChunkGatewayAsync();
        var cohort = NewCohort();
        var lines = Enumerable.Range(0, 250).Select(i => $$"""{"external_id":"u{{i}}"}""");
        var content = new StreamedLines(lines, "application/x-ndjson",
            breakOff: () => Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort).Count >= 2), because: "chunks out before the break"))
            .Typed();

        await Assert.ThrowsAnyAsync<HttpRequestException>(() => PutAsync(gateway.Client, cohort, content));

        var chunks = await Eventually.UntilAsync(() => Task.FromResult(ChunksOf(fx, cohort)), c => c.Any(m => m.Snapshot!.Aborted),
            because: "the abort marker is published");
        var aborted = Assert.Single(chunks, c => c.Snapshot!.Aborted).Snapshot!;
        Assert.False(string.IsNullOrEmpty(aborted.AbortReason));
        Assert.DoesNotContain(chunks, c => c.Snapshot!.IsLast);
        Assert.Single(chunks.Select(c => c.ImportId).Distinct());
    }

    [Fact]
    public async Task PutMembers_BodyOverTheConfiguredLimit_Returns413()
    {
        await using var gateway = await SmallChunkGatewayAsync(maxBytes: 1000);
        var cohort = NewCohort();
        var lines = Enumerable.Range(0, 500).Select(i => $$"""{"external_id":"u{{i}}"}""");

        var reply = await PutAsync(gateway.Client, cohort, new StreamedLines(lines, "application/x-ndjson").Typed());

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, reply.Status);
        Assert.Equal("request body is larger than 1,000 bytes", reply.Message);
        // Chunks that went out before the limit was hit are withdrawn with an abort marker.
        var chunks = ChunksOf(fx, cohort);
        Assert.DoesNotContain(chunks, c => c.Snapshot!.IsLast);
    }
}
