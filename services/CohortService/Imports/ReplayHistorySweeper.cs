using CohortBridge.ServiceDefaults;
using Dapper;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Keeps the import history bounded, in two steps. After <see cref="CohortsOptions.ReplayRetention"/> it clears the user
/// sets that only a replay needs: those in the CohortUpdated an import stored to publish again on redelivery, and the
/// added/removed sets of change-log versions (without it both grow by ~14 kB per 1,000-identifier request, for ever).
/// The stored event keeps its counts and becomes <c>MustReread</c> (a few hundred bytes), so a redelivery long after
/// still publishes its version to every subscriber; a cleared version reads as <c>sets_omitted</c>, so the changes
/// endpoint reports the log incomplete across it and a replica that far behind re-reads the cohort. After
/// <see cref="CohortsOptions.ImportRetention"/> it deletes what is left: finished import rows (~0.6 kB per request),
/// change-log entries and finished snapshots' rows; a message for a deleted import is then refused
/// (<see cref="ImportExpiredException"/>). Cohorts, memberships, versions and imports still processing stay. Bounded
/// batches that skip rows locked by imports in progress, so several replicas may sweep at once.
/// </summary>
public sealed partial class ReplayHistorySweeper(
    NpgsqlDataSource dataSource, IOptions<CohortsOptions> options, ILogger<ReplayHistorySweeper> logger) : BackgroundService
{
    private const int BatchSize = 5000;

    /// <summary>What one sweep did: stored events and change-log versions trimmed; imports, versions and snapshots deleted.</summary>
    public readonly record struct Sweep(int TrimmedEvents, int ClearedVersions, int DeletedImports, int DeletedVersions, int DeletedSnapshots)
    {
        public bool IsEmpty => this == default;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.ReplaySweepInterval);
        do
        {
            try
            {
                var sweep = await SweepOnceAsync(stoppingToken);
                if (!sweep.IsEmpty)
                {
                    Log.Swept(logger, sweep.TrimmedEvents, sweep.ClearedVersions, options.Value.ReplayRetention,
                        sweep.DeletedImports, sweep.DeletedVersions, sweep.DeletedSnapshots, options.Value.ImportRetention);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.SweepFailed(logger, ex);
            }
        }
        while (await timer.NextTickAsync(stoppingToken));
    }

    /// <summary>Trims and deletes everything past the retentions, in that order.</summary>
    public async Task<Sweep> SweepOnceAsync(CancellationToken ct)
    {
        var (events, sets) = await TrimAsync(ct);
        var (imports, versions, snapshots) = await DeleteAsync(ct);
        return new Sweep(events, sets, imports, versions, snapshots);
    }

    private async Task<(int Events, int ChangeSets)> TrimAsync(CancellationToken ct)
    {
        var retention = options.Value.ReplayRetention;
        if (retention <= TimeSpan.Zero)
        {
            return (0, 0);
        }

        // Rows completed before migration 0012 hold the event in the jsonb column; both end up as text.
        const string events = """
            UPDATE imports
            SET event_json = (coalesce(event_json::jsonb, pending_event)
                    || '{"added": null, "removed": null, "mustReread": true}'::jsonb)::text,
                pending_event = NULL, event_trimmed = true
            WHERE import_id IN (
                SELECT import_id FROM imports
                WHERE NOT event_trimmed AND (event_json IS NOT NULL OR pending_event IS NOT NULL)
                    AND completed_at < now() - @retention
                LIMIT @batch FOR UPDATE SKIP LOCKED)
            """;
        const string sets = """
            UPDATE cohort_changes SET added = '{}', removed = '{}', sets_omitted = true
            WHERE (cohort_pk, version) IN (
                SELECT cohort_pk, version FROM cohort_changes
                WHERE NOT sets_omitted AND occurred_at < now() - @retention
                LIMIT @batch FOR UPDATE SKIP LOCKED)
            """;
        return (await ClearAsync(events, new { retention }, ct), await ClearAsync(sets, new { retention }, ct));
    }

    private async Task<(int Imports, int Versions, int Snapshots)> DeleteAsync(CancellationToken ct)
    {
        var retention = options.Value.ImportRetention;
        if (retention <= TimeSpan.Zero)
        {
            return (0, 0, 0);
        }

        // The horizon is committed before any row under it is deleted: from then on registration refuses a message
        // accepted before it that has no row, so a deleted import never comes back as a new one. Imports still
        // processing stay, whatever their age.
        const string horizon = """
            UPDATE import_deletion_horizon SET deleted_before = greatest(deleted_before, now() - @retention)
            RETURNING deleted_before
            """;
        const string imports = """
            DELETE FROM imports WHERE import_id IN (
                SELECT import_id FROM imports
                WHERE status <> 'processing' AND accepted_at < @before
                LIMIT @batch FOR UPDATE SKIP LOCKED)
            """;
        // Only entries whose sets are cleared (all of them this old: ImportRetention >= ReplayRetention). The changes
        // endpoint reports the log incomplete from a deleted version on, as it does for a cleared one.
        const string versions = """
            DELETE FROM cohort_changes WHERE (cohort_pk, version) IN (
                SELECT cohort_pk, version FROM cohort_changes
                WHERE sets_omitted AND occurred_at < now() - @retention
                LIMIT @batch FOR UPDATE SKIP LOCKED)
            """;
        // After its import row (which a chunk registers before it touches the snapshot row, so a chunk redelivered in
        // between is refused rather than staging the snapshot again); its chunk rows are gone already. One row per
        // snapshot request, so no index.
        const string snapshots = """
            DELETE FROM snapshots WHERE import_id IN (
                SELECT s.import_id FROM snapshots s
                WHERE s.state <> 'staging' AND s.finished_at < now() - @retention
                    AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.import_id = s.import_id)
                    AND NOT EXISTS (SELECT 1 FROM snapshot_chunks c WHERE c.import_id = s.import_id)
                LIMIT @batch FOR UPDATE SKIP LOCKED)
            """;
        DateTime before;
        await using (var conn = await dataSource.OpenConnectionAsync(ct))
        {
            before = await conn.ExecuteScalarAsync<DateTime>(new CommandDefinition(horizon, new { retention }, cancellationToken: ct));
        }

        return (await ClearAsync(imports, new { before }, ct),
            await ClearAsync(versions, new { retention }, ct),
            await ClearAsync(snapshots, new { retention }, ct));
    }

    /// <summary>Runs one clearing or deleting statement batch after batch, with <c>@batch</c> added to its parameters.</summary>
    private Task<int> ClearAsync(string sql, object parameters, CancellationToken ct) =>
        Batches.DrainAsync(BatchSize, async batch =>
        {
            var args = new DynamicParameters(parameters);
            args.Add("batch", batch);
            await using var conn = await dataSource.OpenConnectionAsync(ct);
            return await conn.ExecuteAsync(new CommandDefinition(sql, args, cancellationToken: ct));
        });

    private static partial class Log
    {
        [LoggerMessage(EventId = 420, Level = LogLevel.Information,
            Message = "Cleared the user sets of {Events} stored import events (kept as MustReread) and {ChangeSets} change-log versions older than {Retention}; deleted {Imports} imports, {Versions} change-log entries and {Snapshots} snapshot rows older than {ImportRetention}")]
        public static partial void Swept(ILogger logger, int events, int changeSets, TimeSpan retention, int imports, int versions, int snapshots, TimeSpan importRetention);

        [LoggerMessage(EventId = 421, Level = LogLevel.Warning, Message = "Replay history sweep failed; retrying at the next interval")]
        public static partial void SweepFailed(ILogger logger, Exception ex);
    }
}
