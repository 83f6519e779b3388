using Dapper;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Clears, after <see cref="CohortsOptions.ReplayRetention"/>, the user sets that only a replay needs: those in the
/// CohortUpdated an import stored to publish again on redelivery, and the added/removed sets of change-log versions.
/// Without it both grow by ~14 kB per 1,000-identifier request, for ever. The stored event keeps its counts and becomes
/// <c>MustReread</c> (a few hundred bytes), so a redelivery long after still publishes its version to every subscriber.
/// Import rows with their statistics and every version's entry stay; a cleared version reads as <c>sets_omitted</c>, so
/// the changes endpoint reports the log incomplete across it and a replica that far behind re-reads the cohort. Bounded
/// batches that skip rows locked by imports in progress, so several replicas may sweep at once.
/// </summary>
public sealed partial class ReplayHistorySweeper(
    NpgsqlDataSource dataSource, IOptions<CohortsOptions> options, ILogger<ReplayHistorySweeper> logger) : BackgroundService
{
    private const int BatchSize = 5000;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.ReplaySweepInterval);
        do
        {
            try
            {
                var (events, sets) = await SweepOnceAsync(stoppingToken);
                if (events + sets > 0)
                {
                    Log.Swept(logger, events, sets, options.Value.ReplayRetention);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.SweepFailed(logger, ex);
            }
        }
        while (await timer.NextTickAsync(stoppingToken));
    }

    /// <summary>Clears every set past the retention; returns how many stored events and change-log versions it trimmed.</summary>
    public async Task<(int Events, int ChangeSets)> SweepOnceAsync(CancellationToken ct)
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
        return (await ClearAsync(events, retention, ct), await ClearAsync(sets, retention, ct));
    }

    /// <summary>Runs one clearing statement batch after batch (each its own short transaction) until one comes up short.</summary>
    private async Task<int> ClearAsync(string sql, TimeSpan retention, CancellationToken ct)
    {
        var total = 0;
        int cleared;
        do
        {
            await using var conn = await dataSource.OpenConnectionAsync(ct);
            cleared = await conn.ExecuteAsync(new CommandDefinition(sql, new { retention, batch = BatchSize }, cancellationToken: ct));
            total += cleared;
        }
        while (cleared == BatchSize);
        return total;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 420, Level = LogLevel.Information,
            Message = "Cleared the user sets of {Events} stored import events (kept as MustReread) and {ChangeSets} change-log versions older than {Retention}")]
        public static partial void Swept(ILogger logger, int events, int changeSets, TimeSpan retention);

        [LoggerMessage(EventId = 421, Level = LogLevel.Warning, Message = "Replay history sweep failed; retrying at the next interval")]
        public static partial void SweepFailed(ILogger logger, Exception ex);
    }
}
