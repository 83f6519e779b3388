using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using Dapper;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// A CohortService process of its own with a short snapshot timeout (6 s without progress) and a fast sweeper, so
/// that the timeout test need not wait half an hour and other test classes never see it.
/// </summary>
public sealed class SnapshotCohortService : CohortServiceHost, IAsyncLifetime
{
    public SnapshotCohortService()
    {
        Overrides["Cohorts__SnapshotTimeoutMinutes"] = "0.1";
        Overrides["Cohorts__SnapshotSweepIntervalSeconds"] = "0.5";
        // Below the 60 users of the large-change test, above the 6 of the replacement test.
        Overrides["Cohorts__ChangeLogSetLimit"] = "40";
    }

    public Task InitializeAsync() => StartAsync();

    Task IAsyncLifetime.DisposeAsync() => DisposeAsync().AsTask();
}

/// <summary>
/// Snapshot chunks (CohortExportReceived, Kind = SnapshotChunk) through the broker into a real CohortService process
/// and its database: staging, completion as one diff, duplicates, abort, timeout, progress.
/// </summary>
public sealed class SnapshotImportTests(SnapshotCohortService host) : IClassFixture<SnapshotCohortService>
{
    private static CohortExportReceived Chunk(
        string ws, string cohortId, Guid importId, int sequence, SnapshotChunk? content = null, int? lastOf = null) => new()
    {
        ImportId = importId,
        WorkspaceId = ws,
        Partner = "tinyclues",
        CohortId = cohortId,
        Kind = CohortExportKind.SnapshotChunk,
        Snapshot = (content ?? new SnapshotChunk { Sequence = sequence, IsLast = false }) with
        {
            Sequence = sequence,
            IsLast = lastOf is not null,
            ChunkCount = lastOf,
        },
        OccurredAt = DateTimeOffset.UtcNow,
    };

    private static SnapshotChunk Ids(params string[] externalIds) => new() { Sequence = 0, IsLast = false, ExternalIds = externalIds };

    private async Task<JsonElement> StatusAsync(string ws, Guid importId) =>
        await host.GetJsonAsync(host.Admin, $"internal/workspaces/{ws}/imports/{importId}");

    private async Task<JsonElement> WaitForProgressAsync(string ws, Guid importId, long processed) =>
        await Eventually.UntilAsync(async () =>
        {
            using var response = await host.Admin.GetAsync($"internal/workspaces/{ws}/imports/{importId}");
            return response.IsSuccessStatusCode ? JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone() : default;
        }, e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("processed", out var p) && p.ValueKind == JsonValueKind.Number
                && p.GetInt64() == processed, because: $"{processed} identifiers processed");

    /// <summary>The staging of a snapshot: its table and chunk rows are gone once it completed or failed.</summary>
    private async Task<(bool TableExists, long ChunkRows)> StagingAsync(Guid importId)
    {
        await using var conn = await host.OpenAsync();
        var table = await conn.ExecuteScalarAsync<bool>(
            "SELECT to_regclass(@name) IS NOT NULL", new { name = "snapshot_staging_" + importId.ToString("N") });
        var rows = await conn.ExecuteScalarAsync<long>("SELECT count(*) FROM snapshot_chunks WHERE import_id = @importId", new { importId });
        return (table, rows);
    }

    private static long Unmatched(JsonElement status, string reason) =>
        status.GetProperty("unmatched").TryGetProperty(reason, out var n) ? n.GetInt64() : 0;

    [Fact]
    public async Task Snapshot_AllChunksArrive_ReplacesMembershipExactlyWithOneVersion()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws,
            """{"external_id":"u1"}""", """{"external_id":"u2"}""", """{"external_id":"u3"}""",
            """{"external_id":"u4"}""", """{"external_id":"u5"}""",
            """{"device_ids":["dev-anon"]}""",
            """{"external_id":"u7","aliases":[{"alias_name":"crm","alias_label":"c-7"}]}""");
        var ord = await host.OrdinalsAsync(ws);
        var before = await host.ImportAsync(Changes(ws, "weekly", Add("u1", "u2", "u3")));
        Assert.Equal(1, before.GetProperty("cohort_version").GetInt64());
        var importId = Guid.NewGuid();

        // Out of order: the chunks are staged as they come, matched and applied when the set is complete.
        await host.Bus.Publish(Chunk(ws, "weekly", importId, 1, new SnapshotChunk
        {
            Sequence = 0,
            IsLast = false,
            DeviceIds = ["dev-anon"],
            Aliases = [new UserAlias { AliasName = "crm", AliasLabel = "c-7" }],
        }));
        await host.Bus.Publish(Chunk(ws, "weekly", importId, 0, Ids("u2", "u4", "nobody")));
        var running = await WaitForProgressAsync(ws, importId, 5);
        Assert.Equal("processing", running.GetProperty("status").GetString());
        Assert.Equal(5, running.GetProperty("received").GetInt64());
        Assert.Equal(0, running.GetProperty("matched").GetInt64());
        Assert.Equal(1, (await host.MembersAsync(ws, "weekly")).Version);

        await host.Bus.Publish(Chunk(ws, "weekly", importId, 2,
            new SnapshotChunk { Sequence = 0, IsLast = false, ExternalIds = ["u5"], InvalidIdentifiers = ["{bad json"] }, lastOf: 3));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(7, status.GetProperty("received").GetInt64());
        Assert.Equal(7, status.GetProperty("processed").GetInt64());
        Assert.Equal(5, status.GetProperty("matched").GetInt64());
        Assert.Equal(1, Unmatched(status, "unknown_external_id"));
        Assert.Equal(1, Unmatched(status, "invalid_identifier"));
        Assert.Equal(4, status.GetProperty("added").GetInt64());
        Assert.Equal(2, status.GetProperty("removed").GetInt64());
        Assert.Equal(2, status.GetProperty("cohort_version").GetInt64());
        var (members, version, _) = await host.MembersAsync(ws, "weekly");
        Assert.Equal(2, version);
        Assert.Equal(new[] { ord["u2"], ord["u4"], ord["u5"], 5, ord["u7"] }.Order(), members);
        var evt = await host.WaitForUpdateAsync(ws, "weekly", 2);
        Assert.Equal(4, evt.AddedCount);
        Assert.Equal(2, evt.RemovedCount);
        Assert.Equal(5, evt.MemberCount);
        Assert.Equal(importId, evt.ImportId);
        Assert.Equal(["u1", "u3"], evt.Removed!.Select(r => r.ExternalId).Order());
        var changes = await host.GetJsonAsync(host.Admin, $"internal/workspaces/{ws}/cohorts/tinyclues/weekly/changes?after=1");
        Assert.True(changes.GetProperty("complete").GetBoolean());
        Assert.Equal(new[] { ord["u4"], ord["u5"], 5, ord["u7"] }.Order(),
            changes.GetProperty("items")[0].GetProperty("added").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal((false, 0L), await StagingAsync(importId));
        Assert.Single(host.UpdatesOf(ws, "weekly"), u => u.Version == 2);
    }

    [Fact]
    public async Task Snapshot_FirstIntoNewCohort_AddsEachUserOnceThoughNamedSeveralTimes()
    {
        // A new cohort has no member, so its first snapshot inserts without a conflict check: users named twice (in one
        // chunk, and across two chunks) must still be added once.
        var ws = NewWorkspace();
        await host.UpsertAsync(ws,
            """{"external_id":"u1"}""", """{"external_id":"u2"}""", """{"device_ids":["dev-anon"]}""");
        var ord = await host.OrdinalsAsync(ws);
        var importId = Guid.NewGuid();
        await host.Bus.Publish(Chunk(ws, "first", importId, 0, Ids("u1", "u2", "u1")));
        await host.Bus.Publish(Chunk(ws, "first", importId, 1,
            new SnapshotChunk { Sequence = 0, IsLast = false, ExternalIds = ["u2"], DeviceIds = ["dev-anon"] }, lastOf: 2));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(5, status.GetProperty("received").GetInt64());
        Assert.Equal(3, status.GetProperty("added").GetInt64());
        Assert.Equal(0, status.GetProperty("removed").GetInt64());
        var (members, version, _) = await host.MembersAsync(ws, "first");
        Assert.Equal(1, version);
        Assert.Equal(new[] { ord["u1"], ord["u2"], 2 }.Order(), members);
        var evt = await host.WaitForUpdateAsync(ws, "first", 1);
        Assert.Equal(3, evt.AddedCount);
        Assert.Equal(3, evt.MemberCount);
        Assert.Equal((false, 0L), await StagingAsync(importId));
    }

    [Fact]
    public async Task Snapshot_DuplicatedChunkMessage_IsStagedOnce()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"a"}""", """{"external_id":"b"}""", """{"external_id":"c"}""");
        var importId = Guid.NewGuid();

        await host.Bus.Publish(Chunk(ws, "dup", importId, 0, Ids("a", "b")));
        await host.Bus.Publish(Chunk(ws, "dup", importId, 0, Ids("a", "b")));
        await WaitForProgressAsync(ws, importId, 2);
        await host.Bus.Publish(Chunk(ws, "dup", importId, 0, Ids("a", "b")));
        await host.Bus.Publish(Chunk(ws, "dup", importId, 1, Ids("c"), lastOf: 2));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(3, status.GetProperty("received").GetInt64());
        Assert.Equal(3, status.GetProperty("matched").GetInt64());
        Assert.Equal(3, status.GetProperty("added").GetInt64());
        var (members, version, _) = await host.MembersAsync(ws, "dup");
        Assert.Equal([0, 1, 2], members);
        Assert.Equal(1, version);
        // A chunk redelivered after completion changes nothing and publishes the same (cohort, version) again at most.
        await host.Bus.Publish(Chunk(ws, "dup", importId, 1, Ids("c"), lastOf: 2));
        await host.WaitForUpdateAsync(ws, "dup", 1);
        Assert.Equal(1, (await host.MembersAsync(ws, "dup")).Version);
        Assert.All(host.UpdatesOf(ws, "dup"), u => Assert.Equal(1, u.Version));
    }

    [Fact]
    public async Task Snapshot_AbortedChunk_ChangesNothingAndFails()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"keep"}""", """{"external_id":"other"}""");
        await host.ImportAsync(Changes(ws, "stable", Add("keep")));
        var importId = Guid.NewGuid();

        await host.Bus.Publish(Chunk(ws, "stable", importId, 0, Ids("other")));
        await WaitForProgressAsync(ws, importId, 1);
        Assert.True((await StagingAsync(importId)).TableExists);
        await host.Bus.Publish(Chunk(ws, "stable", importId, 1,
            new SnapshotChunk { Sequence = 1, IsLast = false, Aborted = true, AbortReason = "the client disconnected" }));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal("failed", status.GetProperty("status").GetString());
        Assert.Contains("the client disconnected", status.GetProperty("error").GetString());
        Assert.Equal(1, status.GetProperty("received").GetInt64());
        var (members, version, _) = await host.MembersAsync(ws, "stable");
        Assert.Equal([0], members);
        Assert.Equal(1, version);
        Assert.Equal((false, 0L), await StagingAsync(importId));
        // A late last chunk of the aborted snapshot applies nothing either.
        await host.Bus.Publish(Chunk(ws, "stable", importId, 1, Ids("other"), lastOf: 2));
        await host.Bus.Publish(Changes(ws, "stable", Add("keep")));
        await Eventually.UntilAsync(async () => (await StatusAsync(ws, importId)).GetProperty("status").GetString() == "failed");
        Assert.Equal(new[] { 0 }, (await host.MembersAsync(ws, "stable")).Ordinals);
    }

    [Fact]
    public async Task Snapshot_ChunksNeverAllArrive_SweeperFailsItAndDropsStaging()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"x"}""");
        var importId = Guid.NewGuid();

        await host.Bus.Publish(Chunk(ws, "lost", importId, 0, Ids("x")));
        await host.Bus.Publish(Chunk(ws, "lost", importId, 2, Ids("x"), lastOf: 3));
        await WaitForProgressAsync(ws, importId, 2);
        Assert.Equal((true, 2L), await StagingAsync(importId));
        var status = await Eventually.UntilAsync(() => StatusAsync(ws, importId),
            s => s.GetProperty("status").GetString() != "processing", TimeSpan.FromSeconds(40), "the sweeper times the snapshot out");

        Assert.Equal("failed", status.GetProperty("status").GetString());
        Assert.Contains("2 of 3 chunks", status.GetProperty("error").GetString());
        Assert.Equal(2, status.GetProperty("processed").GetInt64());
        Assert.Equal((false, 0L), await StagingAsync(importId));
        using var cohort = await host.Admin.GetAsync($"internal/workspaces/{ws}/cohorts/tinyclues/lost/members");
        Assert.Equal(System.Net.HttpStatusCode.NotFound, cohort.StatusCode);
    }

    [Fact]
    public async Task Snapshot_UserDeletedAfterItsChunkWasStaged_IsNotAdded()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"stays"}""", """{"external_id":"leaves"}""");
        var importId = Guid.NewGuid();

        await host.Bus.Publish(Chunk(ws, "late-delete", importId, 0, Ids("stays", "leaves")));
        await WaitForProgressAsync(ws, importId, 2);
        using (var deleted = await host.Admin.DeleteAsync($"admin/workspaces/{ws}/users/leaves"))
        {
            Assert.True(deleted.IsSuccessStatusCode);
        }

        await host.Bus.Publish(Chunk(ws, "late-delete", importId, 1, lastOf: 2));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(1, status.GetProperty("added").GetInt64());
        Assert.Equal(new[] { 0 }, (await host.MembersAsync(ws, "late-delete")).Ordinals);
    }

    [Fact]
    public async Task Snapshot_EveryKindOfIdentifier_MatchedByTheRulesOfEveryImportWithReasons()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws,
            """{"external_id":"known","aliases":[{"alias_name":"crm","alias_label":"k-1"}]}""",
            """{"device_ids":["dev-anon"],"aliases":[{"alias_name":"crm","alias_label":"a-1"}]}""",
            """{"external_id":"later","device_ids":["dev-identified"]}""");
        var ord = await host.OrdinalsAsync(ws);
        var importId = Guid.NewGuid();

        await host.Bus.Publish(Chunk(ws, "kinds", importId, 0, new SnapshotChunk
        {
            Sequence = 0,
            IsLast = false,
            ExternalIds = ["known", "missing", new string('x', 513)],
            Aliases = [new UserAlias { AliasName = "crm", AliasLabel = "k-1" }, new UserAlias { AliasName = "crm", AliasLabel = "a-1" },
                new UserAlias { AliasName = "crm", AliasLabel = "none" }, new UserAlias { AliasName = "crm", AliasLabel = "" }],
            DeviceIds = ["dev-anon", "dev-identified", "dev-unknown"],
        }));
        var running = await WaitForProgressAsync(ws, importId, 10);
        // While staging: invalid identifiers are known (and sampled) at once, the rest once the snapshot is matched.
        Assert.Equal(10, running.GetProperty("received").GetInt64());
        Assert.Equal(2, Unmatched(running, "invalid_identifier"));
        Assert.Equal(0, running.GetProperty("matched").GetInt64());
        Assert.Contains("crm:", running.GetProperty("unmatched_sample").EnumerateArray().Select(e => e.GetString()));
        await host.Bus.Publish(Chunk(ws, "kinds", importId, 1, Ids("known"), lastOf: 2));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(11, status.GetProperty("received").GetInt64());
        // known (twice, by external id and by alias), the anonymous user (by alias and by device id).
        Assert.Equal(5, status.GetProperty("matched").GetInt64());
        Assert.Equal(1, Unmatched(status, "unknown_external_id"));
        Assert.Equal(1, Unmatched(status, "unknown_alias"));
        Assert.Equal(1, Unmatched(status, "unknown_device_id"));
        Assert.Equal(1, Unmatched(status, "device_id_of_identified_user"));
        Assert.Equal(2, Unmatched(status, "invalid_identifier"));
        var sample = status.GetProperty("unmatched_sample").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("missing", sample);
        Assert.Contains("crm:none", sample);
        Assert.Contains("dev-unknown", sample);
        Assert.Contains("dev-identified", sample);
        Assert.Equal(new[] { ord["known"], 1 }.Order(), (await host.MembersAsync(ws, "kinds")).Ordinals);
    }

    [Fact]
    public async Task Snapshot_DirectoryWriteWhileMatching_IsMatchedAgainUnderTheDirectoryLock()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"stays"}""", """{"external_id":"leaves"}""");
        var importId = Guid.NewGuid();
        await host.Bus.Publish(Chunk(ws, "race", importId, 0, Ids("stays", "leaves")));
        await WaitForProgressAsync(ws, importId, 2);

        // A directory write in progress (as UserDirectory does it: the workspace row updated, directory_version + 1, the
        // user deleted), committed only once the snapshot has matched and waits for the directory lock: the match saw
        // "leaves" live, so only matching again keeps the deleted user out.
        await using (var writer = await host.OpenAsync())
        {
            await using var tx = await writer.BeginTransactionAsync();
            await writer.ExecuteAsync("""
                UPDATE workspaces SET directory_version = directory_version + 1 WHERE workspace_id = @ws;
                UPDATE users SET deleted_at = now() WHERE workspace_id = @ws AND external_id = 'leaves';
                """, new { ws }, tx);
            await host.Bus.Publish(Chunk(ws, "race", importId, 1, lastOf: 2));
            await Eventually.UntilAsync(
                () => writer.ExecuteScalarAsync<long>("""
                    SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE NOT l.granted AND a.datname = current_database() AND a.query LIKE '%workspaces%'
                    """),
                n => n > 0, because: "the snapshot waits for the directory lock after matching");
            await tx.CommitAsync();
        }

        var status = await host.WaitForImportAsync(ws, importId);
        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(1, status.GetProperty("matched").GetInt64());
        Assert.Equal(1, Unmatched(status, "unknown_external_id"));
        Assert.Equal(new[] { 0 }, (await host.MembersAsync(ws, "race")).Ordinals);
    }

    [Fact]
    public async Task Snapshot_LargeChange_PublishesMustRereadWithCounts()
    {
        var ws = NewWorkspace();
        var ids = Enumerable.Range(0, 60).Select(i => $"big-{i}").ToArray();
        await host.UpsertAsync(ws, [.. ids.Select(id => $$"""{"external_id":"{{id}}"}""")]);
        var importId = Guid.NewGuid();

        await host.Bus.Publish(Chunk(ws, "big", importId, 0, Ids(ids[..30])));
        await host.Bus.Publish(Chunk(ws, "big", importId, 1, Ids(ids[30..]), lastOf: 2));
        var status = await host.WaitForImportAsync(ws, importId);

        Assert.Equal(60, status.GetProperty("added").GetInt64());
        var evt = await host.WaitForUpdateAsync(ws, "big", 1);
        Assert.True(evt.MustReread);
        Assert.Null(evt.Added);
        Assert.Equal(60, evt.AddedCount);
        Assert.Equal(60, evt.MemberCount);
        // More users than Cohorts:ChangeLogSetLimit: the log keeps the version without its sets, so it reads as
        // incomplete and a consumer re-reads the membership.
        var changes = await host.GetJsonAsync(host.Admin, $"internal/workspaces/{ws}/cohorts/tinyclues/big/changes?after=0");
        Assert.False(changes.GetProperty("complete").GetBoolean());
        Assert.Equal(60, (await host.MembersAsync(ws, "big")).Ordinals.Length);
    }

    [Fact]
    public async Task Snapshot_EmptyAndUnchanged_EmptiesCohortThenAddsNoVersion()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"gone"}""");
        await host.ImportAsync(Changes(ws, "clear", Add("gone")));

        var emptied = await host.ImportAsync(Chunk(ws, "clear", Guid.NewGuid(), 0, lastOf: 1));
        var again = await host.ImportAsync(Chunk(ws, "clear", Guid.NewGuid(), 0, lastOf: 1));

        Assert.Equal(1, emptied.GetProperty("removed").GetInt64());
        Assert.Equal(2, emptied.GetProperty("cohort_version").GetInt64());
        Assert.Equal("completed", again.GetProperty("status").GetString());
        Assert.Equal(0, again.GetProperty("removed").GetInt64());
        Assert.Equal(2, again.GetProperty("cohort_version").GetInt64());
        var (members, version, _) = await host.MembersAsync(ws, "clear");
        Assert.Empty(members);
        Assert.Equal(2, version);
    }
}
