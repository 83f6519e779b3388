using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using CohortBridge.CohortService.Imports;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using Dapper;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// Several change sets of one cohort applied in one transaction (ImportProcessor.ProcessBatchAsync) on a real
/// database: one version and one event per changing import, in list order; a redelivered batch applies nothing twice.
/// </summary>
public sealed class ImportBatchProcessorTests : IAsyncLifetime
{
    private NpgsqlDataSource _dataSource = null!;
    private ImportProcessor _processor = null!;

    public async Task InitializeAsync()
    {
        // As the service host sets them up (AddPlatformDatabase, AddCohortService; Dapper: DapperSettings).
        Data.DateTimeOffsetHandler.Register();
        _dataSource = await MigratedDataSourceAsync("cohorts_batch");
        var options = Options.Create(new CohortsOptions());
        var gate = new SequenceGate(_dataSource, options, NullLogger<SequenceGate>.Instance);
        _processor = new ImportProcessor(
            _dataSource,
            [new NameImportHandler(options), new ChangesImportHandler(), new ArchiveImportHandler(options)],
            gate,
            new CohortLanes(gate, options),
            new Matching.MatchingSlots(options),
            options,
            NullLogger<ImportProcessor>.Instance);
    }

    public async Task DisposeAsync() => await _dataSource.DisposeAsync();

    /// <summary>Users u0..u{n-1} with ordinals 0..n-1 (written directly: the directory is not under test here).</summary>
    private async Task<string> WorkspaceWithUsersAsync(int users)
    {
        var ws = NewWorkspace();
        await using var conn = await _dataSource.OpenConnectionAsync();
        await conn.ExecuteAsync("""
            INSERT INTO workspaces (workspace_id, next_ordinal) VALUES (@ws, @users);
            INSERT INTO users (workspace_id, ordinal, external_id, identified)
            SELECT @ws, i, 'u' || i, true FROM generate_series(0, @users - 1) AS i;
            """, new { ws, users });
        return ws;
    }

    private static CohortExportReceived Named(string ws, string cohortId, string name) => new()
    {
        ImportId = Guid.NewGuid(),
        WorkspaceId = ws,
        Partner = "tinyclues",
        CohortId = cohortId,
        Kind = CohortExportKind.Name,
        Name = name,
        OccurredAt = DateTimeOffset.UtcNow,
    };

    [Fact]
    public async Task ProcessBatch_QueuedChangeSetsOfOneCohort_OneVersionPerChangingImportInOrder()
    {
        var ws = await WorkspaceWithUsersAsync(5);
        var batch = new[]
        {
            Changes(ws, "b", Add("u0", "u1")),          // v1: creates the cohort, +2
            Changes(ws, "b", Add("u2", "nobody")),      // v2: +1, one unmatched
            Changes(ws, "b", Remove("u0")),             // v3: -1
            Changes(ws, "b", Add("u1")),                // already a member: no version
            Changes(ws, "b", Add("u3"), Remove("u3")),  // net nothing: no version
            Changes(ws, "b", Add("u0"), Add("u4")),     // v4: +2 (u0 back, after its removal above)
        };

        var events = await _processor.ProcessBatchAsync(batch, CancellationToken.None);

        Assert.Equal([1L, 2L, 3L, null, null, 4L], events.Select(e => e?.Version));
        Assert.All(events.Where(e => e is not null), e => Assert.Equal(batch[Array.IndexOf(events, e)].ImportId, e!.ImportId));
        Assert.Equal([2L, 3L, 2L, 4L], events.Where(e => e is not null).Select(e => e!.MemberCount));
        Assert.Equal([0, 4], events[5]!.Added!.Select(a => a.Ordinal));
        Assert.Equal(["u0", "u4"], events[5]!.Added!.Select(a => a.ExternalId));
        Assert.Equal([0], events[2]!.Removed!.Select(a => a.Ordinal));

        await using var conn = await _dataSource.OpenConnectionAsync();
        var imports = (await conn.QueryAsync<(Guid Id, string Status, long Received, long Matched, long Added, long? Version)>(
            "SELECT import_id, status, received, matched, added, cohort_version FROM imports WHERE workspace_id = @ws", new { ws }))
            .ToDictionary(r => r.Id);
        Assert.All(batch, m => Assert.Equal("completed", imports[m.ImportId].Status));
        Assert.Equal((2L, 1L), (imports[batch[1].ImportId].Received, imports[batch[1].ImportId].Matched));
        Assert.Equal((2L, 2L, 0L), (imports[batch[4].ImportId].Received, imports[batch[4].ImportId].Matched, imports[batch[4].ImportId].Added));
        Assert.Equal([1L, 2L, 3L, 3L, 3L, 4L], batch.Select(m => imports[m.ImportId].Version));
        var log = (await conn.QueryAsync<(long Version, Guid ImportId, int[] Added, int[] Removed)>("""
            SELECT c.version, c.import_id, c.added, c.removed FROM cohort_changes c JOIN cohorts k ON k.id = c.cohort_pk
            WHERE k.workspace_id = @ws ORDER BY c.version
            """, new { ws })).ToList();
        Assert.Equal([batch[0].ImportId, batch[1].ImportId, batch[2].ImportId, batch[5].ImportId], log.Select(l => l.ImportId));
        Assert.Equal([1L, 2L, 3L, 4L], log.Select(l => l.Version));
        Assert.Equal([0, 4], log[3].Added);
        Assert.Equal([0], log[2].Removed);
        Assert.Equal((4L, 4L), await conn.QuerySingleAsync<(long, long)>(
            "SELECT version, member_count FROM cohorts WHERE workspace_id = @ws", new { ws }));
        var members = (await conn.QueryAsync<int>(
            "SELECT m.ordinal FROM memberships m JOIN cohorts k ON k.id = m.cohort_pk WHERE k.workspace_id = @ws ORDER BY 1", new { ws })).ToList();
        Assert.Equal([0, 1, 2, 4], members);
    }

    [Fact]
    public async Task ProcessBatch_MatchedAhead_UsedOnlyWhileTheDirectoryIsUnchanged()
    {
        var ws = await WorkspaceWithUsersAsync(4);
        var kept = Changes(ws, "ahead", Add("u0", "u1"));
        var stale = Changes(ws, "ahead", Add("u2", "u3"));
        var keptMatch = await _processor.PrepareAsync(kept, CancellationToken.None);

        await using var conn = await _dataSource.OpenConnectionAsync();
        // Marks u1 deleted behind the directory's back (no directory_version change): the match made ahead still holds
        // for the processor, which shows it is the one used.
        await conn.ExecuteAsync("UPDATE users SET deleted_at = now() WHERE workspace_id = @ws AND external_id = 'u1'", new { ws });
        var events = await _processor.ProcessBatchAsync([kept], CancellationToken.None, [keptMatch]);
        Assert.Equal([0, 1], events[0]!.Added!.Select(a => a.Ordinal));

        // A directory write (as UserDirectory does: deletion, then directory_version + 1) after the match: matched again.
        var staleMatch = await _processor.PrepareAsync(stale, CancellationToken.None);
        await conn.ExecuteAsync("""
            UPDATE users SET deleted_at = now() WHERE workspace_id = @ws AND external_id = 'u3';
            UPDATE workspaces SET directory_version = directory_version + 1 WHERE workspace_id = @ws;
            """, new { ws });
        events = await _processor.ProcessBatchAsync([stale], CancellationToken.None, [staleMatch]);
        Assert.Equal([2], events[0]!.Added!.Select(a => a.Ordinal));
        var (matched, unmatched) = await conn.QuerySingleAsync<(long, string)>(
            "SELECT matched, unmatched::text FROM imports WHERE import_id = @id", new { id = stale.ImportId });
        Assert.Equal(1, matched);
        Assert.Contains("\"unknown_external_id\": 1", unmatched, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ProcessBatch_OtherKindsOrSeveralCohorts_Refused()
    {
        var ws = await WorkspaceWithUsersAsync(1);
        await Assert.ThrowsAsync<ArgumentException>(() => _processor.ProcessBatchAsync(
            [Changes(ws, "x", Add("u0")), Named(ws, "x", "X")], CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => _processor.ProcessBatchAsync(
            [Changes(ws, "x", Add("u0")), Changes(ws, "y", Add("u0"))], CancellationToken.None));
    }

    [Fact]
    public async Task ProcessBatch_RedeliveredBatch_AppliesNothingTwiceAndReturnsStoredEvents()
    {
        var ws = await WorkspaceWithUsersAsync(4);
        var first = new[] { Changes(ws, "r", Add("u0")), Changes(ws, "r", Add("u1")), Changes(ws, "r", Remove("u0")) };
        var applied = await _processor.ProcessBatchAsync(first, CancellationToken.None);

        // The same messages again, one of them twice, followed by a new one: only the new one is applied.
        var fresh = Changes(ws, "r", Add("u2"));
        var again = await _processor.ProcessBatchAsync([first[1], first[0], first[2], first[0], fresh], CancellationToken.None);

        Assert.Equal([2L, 1L, 3L, 1L, 4L], again.Select(e => e!.Version));
        Assert.Equal(
            [.. new[] { applied[1], applied[0], applied[2], applied[0] }.Select(e => JsonSerializer.Serialize(e))],
            again.Take(4).Select(e => JsonSerializer.Serialize(e)));
        Assert.Equal(2, again[4]!.MemberCount);

        await using var conn = await _dataSource.OpenConnectionAsync();
        Assert.Equal(4L, await conn.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM cohort_changes c JOIN cohorts k ON k.id = c.cohort_pk WHERE k.workspace_id = @ws", new { ws }));
        Assert.Equal((4L, 2L), await conn.QuerySingleAsync<(long, long)>(
            "SELECT version, member_count FROM cohorts WHERE workspace_id = @ws", new { ws }));
    }

    [Fact]
    public async Task ProcessBatch_RedeliveredImportCompletedBeforeMigration0012_ReturnsEventStoredAsJsonb()
    {
        var ws = await WorkspaceWithUsersAsync(2);
        var first = new[] { Changes(ws, "legacy", Add("u0")), Changes(ws, "legacy", Add("u1")) };
        var applied = await _processor.ProcessBatchAsync(first, CancellationToken.None);

        // New rows keep the event as text only; rows completed before 0012 have it in the jsonb column.
        await using var conn = await _dataSource.OpenConnectionAsync();
        Assert.Equal(2, await conn.ExecuteAsync("""
            UPDATE imports SET pending_event = event_json::jsonb, event_json = NULL
            WHERE workspace_id = @ws AND event_json IS NOT NULL AND pending_event IS NULL
            """, new { ws }));

        var again = await _processor.ProcessBatchAsync(first, CancellationToken.None);

        Assert.Equal(applied.Select(e => JsonSerializer.Serialize(e)), again.Select(e => JsonSerializer.Serialize(e)));
        Assert.Equal([1L, 2L], again.Select(e => e!.Version));
    }

    [Fact]
    public async Task ReplaySweep_PastRetention_ClearsUserSetsAndKeepsEventCounts()
    {
        var ws = await WorkspaceWithUsersAsync(3);
        var old = new[] { Changes(ws, "aged", Add("u0", "nobody")), Changes(ws, "aged", Add("u1")) };
        await _processor.ProcessBatchAsync(old, CancellationToken.None);
        var recent = Changes(ws, "aged", Add("u2"));
        await _processor.ProcessBatchAsync([recent], CancellationToken.None);
        await using var conn = await _dataSource.OpenConnectionAsync();
        await AgeAsync(conn, ws, old.Select(m => m.ImportId), TimeSpan.FromDays(8));
        // The first as completed before migration 0012, with its event in the jsonb column.
        Assert.Equal(1, await conn.ExecuteAsync(
            "UPDATE imports SET pending_event = event_json::jsonb, event_json = NULL WHERE import_id = @id", new { id = old[0].ImportId }));

        var cleared = await Sweeper(TimeSpan.FromDays(7)).SweepOnceAsync(CancellationToken.None);

        // Each test has a database of its own: the two aged imports and their two versions, nothing else.
        Assert.Equal(new ReplayHistorySweeper.Sweep(2, 2, 0, 0, 0), cleared);
        Assert.True((await Sweeper(TimeSpan.FromDays(7)).SweepOnceAsync(CancellationToken.None)).IsEmpty);
        var imports = (await conn.QueryAsync<(Guid Id, bool Trimmed, string Status, long Received, long Matched, long Added, long Version)>("""
            SELECT import_id, event_trimmed, status, received, matched, added, cohort_version
            FROM imports WHERE workspace_id = @ws
            """, new { ws })).ToDictionary(r => r.Id, r => (r.Trimmed, r.Status, r.Received, r.Matched, r.Added, r.Version));
        Assert.Equal((true, "completed", 2L, 1L, 1L, 1L), imports[old[0].ImportId]);
        Assert.Equal((true, "completed", 1L, 1L, 1L, 2L), imports[old[1].ImportId]);
        Assert.Equal((false, "completed", 1L, 1L, 1L, 3L), imports[recent.ImportId]);
        // The aged events keep their version and counts without users, as text; the recent one still lists its user.
        var stored = (await conn.QueryAsync<string>(
            "SELECT event_json FROM imports WHERE workspace_id = @ws AND pending_event IS NULL", new { ws }))
            .Select(CohortEvents.Deserialize).OrderBy(e => e.Version).ToList();
        Assert.Equal(
            [(1L, 1L, 1L, true, null, null), (2L, 1L, 2L, true, null, null), (3L, 1L, 3L, false, "u2", 0)],
            stored.Select(e => (e.Version, e.AddedCount, e.MemberCount, e.MustReread, e.Added?.Single().ExternalId, e.Removed?.Count)));
        var log = (await conn.QueryAsync<(long Version, bool Omitted, int[] Added)>("""
            SELECT c.version, c.sets_omitted, c.added FROM cohort_changes c JOIN cohorts k ON k.id = c.cohort_pk
            WHERE k.workspace_id = @ws ORDER BY c.version
            """, new { ws })).ToList();
        Assert.Equal([(1L, true, ""), (2L, true, ""), (3L, false, "2")], log.Select(l => (l.Version, l.Omitted, string.Join(",", l.Added))));
        Assert.Equal((3L, 3L), await conn.QuerySingleAsync<(long, long)>(
            "SELECT version, member_count FROM cohorts WHERE workspace_id = @ws", new { ws }));
    }

    [Fact]
    public async Task ProcessBatch_RedeliveredAfterReplaySweep_AppliesNothingAndPublishesCountsOnly()
    {
        var ws = await WorkspaceWithUsersAsync(2);
        var first = Changes(ws, "redelivered-late", Add("u0"));
        await _processor.ProcessBatchAsync([first], CancellationToken.None);
        var second = Changes(ws, "redelivered-late", Remove("u0"), Add("u1"));
        await _processor.ProcessBatchAsync([second], CancellationToken.None);
        await using var conn = await _dataSource.OpenConnectionAsync();
        await AgeAsync(conn, ws, [first.ImportId], TimeSpan.FromDays(8));
        await Sweeper(TimeSpan.FromDays(7)).SweepOnceAsync(CancellationToken.None);

        // An operator moves the first request back from the error queue long after: it must not re-add u0.
        var again = await _processor.ProcessBatchAsync([first], CancellationToken.None);

        var republished = Assert.Single(again)!;
        Assert.Equal((1L, 1L, 0L, 1L, true), (republished.Version, republished.AddedCount, republished.RemovedCount, republished.MemberCount, republished.MustReread));
        Assert.Equal(first.ImportId, republished.ImportId);
        Assert.Null(republished.Added);
        Assert.Equal((2L, 1L), await conn.QuerySingleAsync<(long, long)>(
            "SELECT version, member_count FROM cohorts WHERE workspace_id = @ws", new { ws }));
        Assert.Equal([1], await conn.QueryAsync<int>(
            "SELECT m.ordinal FROM memberships m JOIN cohorts k ON k.id = m.cohort_pk WHERE k.workspace_id = @ws", new { ws }));
    }

    [Fact]
    public async Task ReplaySweep_RetentionZero_KeepsEverything()
    {
        var ws = await WorkspaceWithUsersAsync(1);
        var import = Changes(ws, "kept", Add("u0"));
        await _processor.ProcessBatchAsync([import], CancellationToken.None);
        await using var conn = await _dataSource.OpenConnectionAsync();
        await AgeAsync(conn, ws, [import.ImportId], TimeSpan.FromDays(3650));

        Assert.True((await Sweeper(TimeSpan.Zero, TimeSpan.Zero).SweepOnceAsync(CancellationToken.None)).IsEmpty);

        Assert.Equal((true, false, false), await conn.QuerySingleAsync<(bool, bool, bool)>("""
            SELECT i.event_json IS NOT NULL, i.event_trimmed, c.sets_omitted FROM imports i JOIN cohort_changes c ON c.import_id = i.import_id
            WHERE i.workspace_id = @ws
            """, new { ws }));
    }

    [Fact]
    public async Task ImportSweep_PastImportRetention_DeletesFinishedImportsTheirVersionsAndSnapshotRows()
    {
        var ws = await WorkspaceWithUsersAsync(3);
        var old = new[] { Changes(ws, "expired", Add("u0", "nobody")), Changes(ws, "expired", Add("u1")) };
        await _processor.ProcessBatchAsync(old, CancellationToken.None);
        var recent = Changes(ws, "expired", Add("u2"));
        await _processor.ProcessBatchAsync([recent], CancellationToken.None);
        await using var conn = await _dataSource.OpenConnectionAsync();
        await AgeAsync(conn, ws, old.Select(m => m.ImportId), TimeSpan.FromDays(31));
        // An import still processing that long (its message stuck somewhere), and two snapshots: one finished long
        // ago, one still staging.
        var stuck = Changes(ws, "expired", Add("u0"));
        Assert.True(await ImportRepository.RegisterAsync(_dataSource, stuck, CancellationToken.None));
        var (finished, staging) = (Guid.NewGuid(), Guid.NewGuid());
        await conn.ExecuteAsync("""
            UPDATE imports SET accepted_at = now() - interval '40 days' WHERE import_id = @stuck;
            INSERT INTO snapshots (import_id, workspace_id, partner, cohort_id, staging_table, state, created_at, finished_at) VALUES
                (@finished, @ws, 'tinyclues', 'snap', 'staging_gone', 'completed', now() - interval '31 days', now() - interval '31 days'),
                (@staging, @ws, 'tinyclues', 'snap', 'staging_open', 'staging', now() - interval '31 days', NULL);
            """, new { stuck = stuck.ImportId, finished, staging, ws });

        var swept = await Sweeper(TimeSpan.FromDays(7), TimeSpan.FromDays(30)).SweepOnceAsync(CancellationToken.None);

        // The aged imports' events and versions are trimmed first, then deleted with their rows; one snapshot row.
        Assert.Equal(new ReplayHistorySweeper.Sweep(2, 2, 2, 2, 1), swept);
        Assert.True((await Sweeper(TimeSpan.FromDays(7), TimeSpan.FromDays(30)).SweepOnceAsync(CancellationToken.None)).IsEmpty);
        Assert.Equal([(recent.ImportId, "completed"), (stuck.ImportId, "processing")], (await conn.QueryAsync<(Guid, string)>(
            "SELECT import_id, status FROM imports WHERE workspace_id = @ws ORDER BY accepted_at DESC", new { ws })).ToList());
        Assert.Equal([3L], await conn.QueryAsync<long>(
            "SELECT c.version FROM cohort_changes c JOIN cohorts k ON k.id = c.cohort_pk WHERE k.workspace_id = @ws", new { ws }));
        Assert.Equal([staging], await conn.QueryAsync<Guid>("SELECT import_id FROM snapshots WHERE workspace_id = @ws", new { ws }));
        // The cohort and its members do not depend on the history.
        Assert.Equal((3L, 3L), await conn.QuerySingleAsync<(long, long)>(
            "SELECT version, member_count FROM cohorts WHERE workspace_id = @ws", new { ws }));
        Assert.Equal([0, 1, 2], await conn.QueryAsync<int>(
            "SELECT m.ordinal FROM memberships m JOIN cohorts k ON k.id = m.cohort_pk WHERE k.workspace_id = @ws ORDER BY 1", new { ws }));
    }

    [Fact]
    public async Task ProcessBatch_RedeliveredAfterImportSweep_RefusedAndAppliesNothing()
    {
        var ws = await WorkspaceWithUsersAsync(2);
        var first = Changes(ws, "refused", Add("u0"));
        await _processor.ProcessBatchAsync([first], CancellationToken.None);
        await _processor.ProcessBatchAsync([Changes(ws, "refused", Remove("u0"), Add("u1"))], CancellationToken.None);
        await using var conn = await _dataSource.OpenConnectionAsync();
        await AgeAsync(conn, ws, [first.ImportId], TimeSpan.FromDays(31));
        Assert.Equal(1, (await Sweeper(TimeSpan.FromDays(7), TimeSpan.FromDays(30)).SweepOnceAsync(CancellationToken.None)).DeletedImports);
        // Its message carries the time it was accepted, now 31 days ago.
        var late = first with { OccurredAt = first.OccurredAt.AddDays(-31) };

        var refused = await Assert.ThrowsAsync<ImportExpiredException>(() => _processor.ProcessBatchAsync([late], CancellationToken.None));

        Assert.Equal(first.ImportId, refused.ImportId);
        Assert.Contains("Cohorts:ImportRetention", refused.Message);
        Assert.Equal((2L, 1L), await conn.QuerySingleAsync<(long, long)>(
            "SELECT version, member_count FROM cohorts WHERE workspace_id = @ws", new { ws }));
        Assert.Equal([1], await conn.QueryAsync<int>(
            "SELECT m.ordinal FROM memberships m JOIN cohorts k ON k.id = m.cohort_pk WHERE k.workspace_id = @ws", new { ws }));
        Assert.Equal(0, await conn.ExecuteScalarAsync<int>("SELECT count(*) FROM imports WHERE import_id = @id", new { id = first.ImportId }));
    }

    [Fact]
    public async Task Register_AfterImportSweep_RefusesOnlyImportsOlderThanTheDeletionsWithoutARow()
    {
        var ws = await WorkspaceWithUsersAsync(1);
        var old = Changes(ws, "ages", Add("u0")) with { OccurredAt = DateTimeOffset.UtcNow.AddDays(-31) };
        var young = Changes(ws, "ages", Add("u0")) with { OccurredAt = DateTimeOffset.UtcNow.AddDays(-29) };
        var known = Changes(ws, "ages", Add("u0"));
        // Nothing deleted yet: any import registers, however old.
        Assert.True(await ImportRepository.RegisterAsync(_dataSource, old, CancellationToken.None));
        Assert.True(await ImportRepository.RegisterAsync(_dataSource, known, CancellationToken.None));
        await using var conn = await _dataSource.OpenConnectionAsync();
        await conn.ExecuteAsync("UPDATE imports SET accepted_at = now() - interval '31 days' WHERE import_id = @id", new { id = known.ImportId });

        // Nothing here has finished, so the sweep deletes nothing, but imports older than 30 days may be gone from now on.
        Assert.Equal(0, (await Sweeper(TimeSpan.FromDays(7), TimeSpan.FromDays(30)).SweepOnceAsync(CancellationToken.None)).DeletedImports);

        var other = Changes(ws, "ages", Add("u0")) with { OccurredAt = old.OccurredAt };
        Assert.False(await ImportRepository.RegisterAsync(_dataSource, other, CancellationToken.None));
        Assert.True(await ImportRepository.RegisterAsync(_dataSource, young, CancellationToken.None));
        // Rows still there (not finished, or not yet swept): redeliveries like any other.
        Assert.True(await ImportRepository.RegisterAsync(_dataSource, old, CancellationToken.None));
        Assert.True(await ImportRepository.RegisterAsync(_dataSource, known, CancellationToken.None));
        Assert.Equal([other.ImportId], await ImportRepository.RegisterManyAsync(_dataSource, [other, young, known], CancellationToken.None));
        // Switching the retention off (or raising it) later does not make what may have been deleted new again.
        Assert.True((await Sweeper(TimeSpan.Zero, TimeSpan.Zero).SweepOnceAsync(CancellationToken.None)).IsEmpty);
        Assert.False(await ImportRepository.RegisterAsync(_dataSource, other, CancellationToken.None));
        Assert.Equal(0, await conn.ExecuteScalarAsync<int>("SELECT count(*) FROM imports WHERE import_id = @id", new { id = other.ImportId }));
    }

    private ReplayHistorySweeper Sweeper(TimeSpan retention, TimeSpan? importRetention = null) => new(
        _dataSource,
        Options.Create(new CohortsOptions { ReplayRetention = retention, ImportRetention = importRetention ?? new CohortsOptions().ImportRetention }),
        NullLogger<ReplayHistorySweeper>.Instance);

    /// <summary>Moves the acceptance and completion of these imports, and the change-log versions they wrote, back in time.</summary>
    private static async Task AgeAsync(NpgsqlConnection conn, string ws, IEnumerable<Guid> importIds, TimeSpan age)
    {
        var ids = importIds.ToArray();
        var aged = await conn.ExecuteAsync("""
            UPDATE imports SET completed_at = completed_at - @age, accepted_at = accepted_at - @age
            WHERE workspace_id = @ws AND import_id = ANY(@ids);
            UPDATE cohort_changes SET occurred_at = occurred_at - @age WHERE import_id = ANY(@ids);
            """, new { ws, ids, age });
        Assert.Equal(ids.Length * 2, aged);
    }
}

/// <summary>
/// Through the broker and the real process: change sets that queue up
/// behind a busy cohort, still with one version and one CohortUpdated per import.
/// </summary>
[Collection("cohort-service")]
public sealed class ImportBatchingTests(SharedCohortService host)
{
    [Fact]
    public async Task Import_BurstQueuedBehindLockedCohort_OneVersionAndOneEventPerImport()
    {
        const int burst = 12;
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, [.. Enumerable.Range(0, burst + 1).Select(i => $$"""{"external_id":"u{{i}}"}""")]);
        await host.ImportAsync(Changes(ws, "burst", Add("u0")) with { Sequence = 1 });
        var messages = Enumerable.Range(1, burst).Select(i => Changes(ws, "burst", Add($"u{i}")) with { Sequence = i + 1 }).ToList();

        // Hold the cohort row: the first message's transaction waits for it while the rest queue up in the process.
        await using (var blocker = await host.OpenAsync())
        {
            await using var tx = await blocker.BeginTransactionAsync();
            await blocker.ExecuteAsync("SELECT 1 FROM cohorts WHERE workspace_id = @ws FOR UPDATE", new { ws }, tx);
            foreach (var m in messages)
            {
                await host.Bus.Publish(m);
            }

            await Eventually.UntilAsync(
                () => blocker.ExecuteScalarAsync<long>(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()"),
                n => n > 0, because: "an import waits for the cohort row");
            await Eventually.UntilAsync(UnacknowledgedAsync, n => n >= 4, because: "the process holds several messages of the burst");
            await tx.CommitAsync();
        }

        foreach (var m in messages)
        {
            await host.WaitForImportAsync(ws, m.ImportId);
        }

        await using var conn = await host.OpenAsync();
        var rows = (await conn.QueryAsync<(Guid ImportId, long Version, string Transaction)>(
            "SELECT import_id, cohort_version, xmin::text FROM imports WHERE workspace_id = @ws AND cohort_version > 1", new { ws }))
            .ToDictionary(r => r.ImportId);
        // Each import got its own version, in request (sequence) order, without gaps.
        Assert.Equal(Enumerable.Range(2, burst).Select(v => (long)v), messages.Select(m => rows[m.ImportId].Version));
        // The imports that queued up behind the busy cohort were written together: fewer transactions than imports.
        Assert.True(rows.Values.Select(r => r.Transaction).Distinct().Count() < burst / 2,
            $"{rows.Values.Select(r => r.Transaction).Distinct().Count()} transactions for {burst} queued imports");

        var updates = await Eventually.UntilAsync(
            () => Task.FromResult(host.UpdatesOf(ws, "burst")),
            u => u.Select(x => x.Version).Distinct().Count() == burst + 1, because: "one CohortUpdated per version");
        Assert.All(updates, u => Assert.Equal(u.Version, u.MemberCount));
        Assert.All(updates.Where(u => u.Version > 1), u => Assert.Equal(rows[u.ImportId!.Value].Version, u.Version));
    }

    private async Task<long> UnacknowledgedAsync() =>
        await host.Infrastructure.QueueAsync(host.VirtualHost, "cohorts-cohort-export-received") is { } queue
        && queue.TryGetProperty("messages_unacknowledged", out var n) ? n.GetInt64() : 0;
}

/// <summary>
/// Through the broker and the real process: an import moved back from an error queue after the replay retention
/// publishes its version again, with counts only, and applies nothing twice.
/// </summary>
[Collection("cohort-service")]
public sealed class ReplayAfterRetentionTests(SharedCohortService host)
{
    [Fact]
    public async Task Import_RedeliveredAfterReplaySweep_PublishesItsVersionAgainWithCountsOnly()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        var first = Changes(ws, "replayed-late", Add("u1"));
        await host.ImportAsync(first);
        await host.ImportAsync(Changes(ws, "replayed-late", Remove("u1"), Add("u2")));
        Assert.False((await host.WaitForUpdateAsync(ws, "replayed-late", 1)).MustReread);
        await host.WaitForUpdateAsync(ws, "replayed-late", 2);
        await using (var conn = await host.OpenAsync())
        {
            Assert.Equal(2, await conn.ExecuteAsync("""
                UPDATE imports SET completed_at = completed_at - interval '8 days' WHERE import_id = @id;
                UPDATE cohort_changes SET occurred_at = occurred_at - interval '8 days' WHERE import_id = @id;
                """, new { id = first.ImportId }));
        }

        // The process sweeps every 10 minutes; this runs the same sweep now against its database.
        await using (var dataSource = NpgsqlDataSource.Create(host.ConnectionString))
        {
            await new ReplayHistorySweeper(dataSource, Options.Create(new CohortsOptions()), NullLogger<ReplayHistorySweeper>.Instance)
                .SweepOnceAsync(CancellationToken.None);
        }

        await host.Bus.Publish(first);

        var versionOne = await Eventually.UntilAsync(
            () => Task.FromResult(host.UpdatesOf(ws, "replayed-late").Where(u => u.Version == 1).ToList()), l => l.Count == 2,
            because: "the replayed import publishes version 1 again");
        var again = versionOne[1];
        Assert.Equal((1L, 0L, 1L, true, first.ImportId), (again.AddedCount, again.RemovedCount, again.MemberCount, again.MustReread, again.ImportId));
        Assert.Null(again.Added);
        var (members, version, _) = await host.MembersAsync(ws, "replayed-late");
        Assert.Equal(2, version);
        Assert.Equal([(await host.OrdinalsAsync(ws))["u2"]], members);
    }

    [Fact]
    public async Task Import_RedeliveredAfterImportSweep_GoesToTheErrorQueueAtOnceAndAppliesNothing()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        var first = Changes(ws, "expired-late", Add("u1"));
        await host.ImportAsync(first);
        await host.ImportAsync(Changes(ws, "expired-late", Remove("u1"), Add("u2")));
        await host.WaitForUpdateAsync(ws, "expired-late", 2);
        await using (var conn = await host.OpenAsync())
        {
            Assert.Equal(2, await conn.ExecuteAsync("""
                UPDATE imports SET accepted_at = accepted_at - interval '31 days', completed_at = completed_at - interval '31 days'
                WHERE import_id = @id;
                UPDATE cohort_changes SET occurred_at = occurred_at - interval '31 days' WHERE import_id = @id;
                """, new { id = first.ImportId }));
        }

        await using (var dataSource = NpgsqlDataSource.Create(host.ConnectionString))
        {
            await new ReplayHistorySweeper(dataSource, Options.Create(new CohortsOptions()), NullLogger<ReplayHistorySweeper>.Instance)
                .SweepOnceAsync(CancellationToken.None);
        }

        // (The process's own sweeper may have got there first.)
        await using (var conn = await host.OpenAsync())
        {
            Assert.Equal(0, await conn.ExecuteScalarAsync<int>("SELECT count(*) FROM imports WHERE import_id = @id", new { id = first.ImportId }));
        }

        // Moved back from an error queue 31 days after the gateway accepted it.
        await host.Bus.Publish(first with { OccurredAt = first.OccurredAt.AddDays(-31) });

        var fault = await Eventually.UntilAsync(() => ErrorQueueHeadersAsync(first.ImportId), h => h is not null,
            because: "the expired import lands in the error queue");
        Assert.Contains("Cohorts:ImportRetention", fault!["MT-Fault-Message"]!.GetValue<string>());
        // Not retried: a retried message carries the retry count (5) in its fault headers.
        Assert.False(fault.ContainsKey("MT-Fault-RetryCount"), fault.ToJsonString());
        var (members, version, _) = await host.MembersAsync(ws, "expired-late");
        Assert.Equal(2, version);
        Assert.Equal([(await host.OrdinalsAsync(ws))["u2"]], members);
        Assert.Single(host.UpdatesOf(ws, "expired-late"), u => u.Version == 1);
    }

    /// <summary>The headers of the message for this import in CohortService's error queue, or null (messages stay queued).</summary>
    private async Task<JsonObject?> ErrorQueueHeadersAsync(Guid importId)
    {
        using var http = host.Infrastructure.ManagementClient();
        using var response = await http.PostAsJsonAsync(
            $"api/queues/{Uri.EscapeDataString(host.VirtualHost)}/cohorts-cohort-export-received_error/get",
            new { count = 1000, ackmode = "ack_requeue_true", encoding = "auto" });
        if (!response.IsSuccessStatusCode)
        {
            return null;
        }

        var messages = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsArray();
        return messages.FirstOrDefault(m => m!["payload"]!.GetValue<string>().Contains(importId.ToString(), StringComparison.Ordinal))?
            ["properties"]?["headers"]?.AsObject();
    }
}
