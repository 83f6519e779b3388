using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using Dapper;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// A cohort's requests apply in the order of their gateway sequence (CohortExportReceived.Sequence), whatever order
/// the broker delivers them in; a sequence that never arrives holds its successors back only for
/// Cohorts:SequenceGapTimeout, and arriving late it is still applied. The messages are published in reverse here, so
/// delivery order is the opposite of request order.
/// </summary>
public sealed class ImportOrderingTests : IAsyncLifetime
{
    private readonly CohortServiceHost _host = new();

    public Task InitializeAsync()
    {
        _host.Overrides["Cohorts__SequenceGapTimeout"] = "00:00:04";
        return _host.StartAsync();
    }

    public Task DisposeAsync() => _host.DisposeAsync().AsTask();

    private static CohortExportReceived Sequenced(CohortExportReceived message, long sequence) => message with { Sequence = sequence };

    [Fact]
    public async Task Import_DeliveredInReverseOrder_AppliesInRequestOrder()
    {
        var ws = NewWorkspace();
        await _host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        // In request order: add u1, remove u1, add u2, remove u2, add u1: only u1 is left. Applied in delivery order
        // (reverse) the removals would come before the additions and u2 would stay.
        var requests = new[]
        {
            Sequenced(Changes(ws, "reorder", Add("u1")), 1),
            Sequenced(Changes(ws, "reorder", Remove("u1")), 2),
            Sequenced(Changes(ws, "reorder", Add("u2")), 3),
            Sequenced(Changes(ws, "reorder", Remove("u2")), 4),
            Sequenced(Changes(ws, "reorder", Add("u1")), 5),
        };
        foreach (var message in requests.Reverse())
        {
            await _host.Bus.Publish(message);
        }

        foreach (var message in requests)
        {
            Assert.Equal("completed", (await _host.WaitForImportAsync(ws, message.ImportId)).GetProperty("status").GetString());
        }

        var ordinals = await _host.OrdinalsAsync(ws);
        var (members, version, _) = await _host.MembersAsync(ws, "reorder");
        Assert.Equal([ordinals["u1"]], members);
        Assert.Equal(5, version);

        // Versions follow request order: sequence n made version n.
        await using var conn = await _host.OpenAsync();
        var versions = (await conn.QueryAsync<(Guid ImportId, long Version)>(
            "SELECT import_id, cohort_version FROM imports WHERE import_id = ANY(@ids)",
            new { ids = requests.Select(r => r.ImportId).ToArray() })).ToDictionary(r => r.ImportId, r => r.Version);
        Assert.Equal([1L, 2, 3, 4, 5], requests.Select(r => versions[r.ImportId]));
    }

    [Fact]
    public async Task Import_PredecessorNeverArrives_AppliesAfterGapTimeout_AndTheLateOneIsStillApplied()
    {
        var ws = NewWorkspace();
        await _host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""", """{"external_id":"u3"}""");
        var second = Sequenced(Changes(ws, "gap", Add("u2")), 2);
        await _host.Bus.Publish(second);

        // Sequence 1 is missing: sequence 2 waits for it (the gap timeout is 4 s here) instead of applying at once. The
        // import shows as soon as it is consumed (on a loaded machine that took over a second once), then keeps waiting.
        var seen = await Eventually.UntilAsync(async () =>
        {
            using var response = await _host.Admin.GetAsync($"internal/workspaces/{ws}/imports/{second.ImportId}");
            return response.IsSuccessStatusCode ? JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone() : default;
        }, e => e.ValueKind == JsonValueKind.Object, because: "the import is registered once consumed");
        Assert.Equal("processing", seen.GetProperty("status").GetString());
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.Equal("processing", (await _host.GetJsonAsync(_host.Admin, $"internal/workspaces/{ws}/imports/{second.ImportId}"))
            .GetProperty("status").GetString());

        Assert.Equal("completed", (await _host.WaitForImportAsync(ws, second.ImportId)).GetProperty("status").GetString());

        // The gap is passed for everyone: the next request applies without waiting again.
        var third = Sequenced(Changes(ws, "gap", Add("u3")), 3);
        Assert.Equal("completed", (await _host.ImportAsync(third)).GetProperty("status").GetString());

        // The missing request turns up after all (e.g. moved back from the error queue): applied late, not dropped.
        var late = Sequenced(Changes(ws, "gap", Add("u1")), 1);
        Assert.Equal("completed", (await _host.ImportAsync(late)).GetProperty("status").GetString());

        var ordinals = await _host.OrdinalsAsync(ws);
        var (members, _, _) = await _host.MembersAsync(ws, "gap");
        Assert.Equal(new[] { ordinals["u1"], ordinals["u2"], ordinals["u3"] }.Order(), members.Order());
    }

    [Fact]
    public async Task Snapshot_LastChunkDeliveredBeforeAnEarlierRequest_ReplacesMembershipAfterIt()
    {
        var ws = NewWorkspace();
        await _host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        // Request 1 adds u2; request 2 is a snapshot of exactly {u1}. In order, u2 is added and then replaced away.
        var changes = Sequenced(Changes(ws, "snap", Add("u2")), 1);
        var snapshot = new CohortExportReceived
        {
            ImportId = Guid.NewGuid(),
            WorkspaceId = ws,
            Partner = "tinyclues",
            CohortId = "snap",
            Kind = CohortExportKind.SnapshotChunk,
            Snapshot = new SnapshotChunk { Sequence = 0, IsLast = true, ChunkCount = 1, ExternalIds = ["u1"] },
            OccurredAt = DateTimeOffset.UtcNow,
            Sequence = 2,
        };
        await _host.Bus.Publish(snapshot);
        await _host.Bus.Publish(changes);

        Assert.Equal("completed", (await _host.WaitForImportAsync(ws, snapshot.ImportId)).GetProperty("status").GetString());
        Assert.Equal("completed", (await _host.WaitForImportAsync(ws, changes.ImportId)).GetProperty("status").GetString());

        var ordinals = await _host.OrdinalsAsync(ws);
        var (members, version, _) = await _host.MembersAsync(ws, "snap");
        Assert.Equal([ordinals["u1"]], members);
        Assert.Equal(2, version);
    }
}
