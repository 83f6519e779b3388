using System.Diagnostics;
using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Applies a <see cref="CohortExportReceived"/> exactly once. One transaction locks the import row, applies the
/// import through the handler of its kind (which locks the cohort row), bumps the version, appends the change log and
/// stores the statistics and the CohortUpdated to publish. A redelivered import finds its row completed and returns
/// the stored event, so the caller publishes the same (cohort, version) again.
/// </summary>
public sealed partial class ImportProcessor(
    NpgsqlDataSource dataSource,
    IEnumerable<IImportHandler> handlers,
    SequenceGate sequenceGate,
    IOptions<CohortsOptions> options,
    ILogger<ImportProcessor> logger)
{
    /// <summary>Set when a message exhausted its retries: nothing was applied, so a message moved back applies it.</summary>
    public const string RetriesExhausted = "the import could not be applied; an operator has been alerted";

    private readonly Dictionary<CohortExportKind, IImportHandler> _handlers = handlers.ToDictionary(h => h.Kind);

    /// <summary>
    /// Returns the event to publish after commit (null when the import changed no cohort). The import shows as
    /// processing at once, then waits for its turn in the cohort's request order (<see cref="SequenceGate"/>).
    /// </summary>
    public async Task<CohortUpdated?> ProcessAsync(CohortExportReceived message, CancellationToken ct)
    {
        await ImportRepository.RegisterAsync(dataSource, message, ct);
        await sequenceGate.WaitForTurnAsync(message, ct);
        return (await ApplyRegisteredAsync([message], ct))[0];
    }

    /// <summary>
    /// Applies several imports of ONE cohort in one transaction, in list order: each still gets its own import row,
    /// statistics, version (+1 per changing import, in this order) and CohortUpdated; an import already applied is
    /// skipped and its stored event returned again. Returns the event to publish for each message (null when none).
    /// Any failure rolls back the whole transaction (nothing applied); the caller may then retry one by one.
    /// </summary>
    public async Task<CohortUpdated?[]> ProcessBatchAsync(IReadOnlyList<CohortExportReceived> messages, CancellationToken ct)
    {
        await ImportRepository.RegisterManyAsync(dataSource, messages, ct);
        return await ApplyRegisteredAsync(messages, ct);
    }

    private async Task<CohortUpdated?[]> ApplyRegisteredAsync(IReadOnlyList<CohortExportReceived> messages, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);

        // Lock order import rows (by id) -> workspace row -> cohort row, as everywhere else.
        var lockStart = Stopwatch.GetTimestamp();
        if (messages.Count > 1)
        {
            await ImportRepository.LockManyAsync(conn, tx, [.. messages.Select(m => m.ImportId)], ct);
        }

        if (LocksCohort(messages[0]))
        {
            await CohortRepository.LockWorkspaceSharedAsync(conn, tx, messages[0].WorkspaceId, ct);
            await CohortRepository.LockCohortAsync(conn, tx, messages[0].WorkspaceId, messages[0].Partner, messages[0].CohortId, ct);
        }

        var outcomes = new Outcome[messages.Count];
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i];
            var record = await ImportRepository.LockAsync(conn, tx, message.ImportId, ct)
                ?? throw new InvalidOperationException($"Import {message.ImportId} was not registered.");
            if (i == 0)
            {
                ImportMetrics.LockWait(ImportMetrics.Since(lockStart));
            }

            outcomes[i] = await ApplyLockedAsync(conn, tx, message, record, ct);

            // Applied, failed or found applied already: either way this request's turn in the cohort's order is done.
            await CohortSequences.AdvanceAsync(conn, tx, message, ct);
        }

        var commitStart = Stopwatch.GetTimestamp();
        await tx.CommitAsync(ct);
        sequenceGate.Advanced();
        ImportMetrics.Commit(ImportMetrics.Since(commitStart));
        ImportMetrics.Batch(messages.Count);

        var events = new CohortUpdated?[messages.Count];
        for (var i = 0; i < messages.Count; i++)
        {
            var (message, outcome) = (messages[i], outcomes[i]);
            switch (outcome.Kind)
            {
                case OutcomeKind.Redelivered:
                    Log.Redelivered(logger, message.WorkspaceId, message.CohortId, message.ImportId, outcome.Detail!);
                    break;
                case OutcomeKind.Failed:
                    Log.Failed(logger, message.WorkspaceId, message.CohortId, message.ImportId, outcome.Detail!);
                    break;
                default:
                    Log.Applied(logger, message.WorkspaceId, message.CohortId, message.ImportId, outcome.Version, outcome.Received, outcome.Matched);
                    break;
            }

            events[i] = outcome.Event;
        }

        if (options.Value.TestHooks.CrashAfterCommitImportId is { } crashId && messages.Any(m => m.ImportId == crashId))
        {
            Environment.FailFast("Test hook: crash after commit, before publish.");
        }

        return events;
    }

    /// <summary>
    /// Applies one import whose row the transaction holds locked; nothing is logged here (the caller logs after commit).
    /// </summary>
    private async Task<Outcome> ApplyLockedAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, CohortExportReceived message, ImportRecord record, CancellationToken ct)
    {
        var retryable = record.Status == ImportStatus.Failed && record.Error == RetriesExhausted;
        if (record.Status != ImportStatus.Processing && !retryable)
        {
            var stored = record.PendingEvent is null ? null : CohortEvents.Deserialize(record.PendingEvent);
            return new Outcome(OutcomeKind.Redelivered, stored, record.Status, 0, 0, 0);
        }

        var scope = new ImportScope(conn, tx, message);
        if (Invalid(message) is { } invalid)
        {
            await ImportRepository.CompleteAsync(conn, tx, message.ImportId, ImportStatus.Failed, scope.Statistics, null, null, invalid, null, ct);
            return new Outcome(OutcomeKind.Failed, null, invalid, 0, 0, 0);
        }

        if (!_handlers.TryGetValue(message.Kind, out var handler))
        {
            // Snapshot chunks never come here (the consumer hands them to SnapshotChunkProcessor).
            var error = $"unknown import kind {message.Kind}";
            await ImportRepository.CompleteAsync(conn, tx, message.ImportId, ImportStatus.Failed, scope.Statistics, null, null, error, null, ct);
            return new Outcome(OutcomeKind.Failed, null, error, 0, 0, 0);
        }

        var applyStart = Stopwatch.GetTimestamp();
        var result = await handler.ApplyAsync(scope, ct);
        CohortUpdated? evt = null;
        if (result is { NewVersion: true, Cohort: { } cohort })
        {
            evt = await CohortEvents.BuildAsync(
                conn, tx, cohort, result.Added, result.Removed, message.ImportId, options.Value.InlineChangeLimit, ct);
        }

        await ImportRepository.CompleteAsync(
            conn, tx, message.ImportId, ImportStatus.Completed, scope.Statistics, result.Cohort?.Id, result.Cohort?.Version, null,
            evt is null ? null : CohortEvents.Serialize(evt), ct);
        ImportMetrics.Apply(ImportMetrics.Since(applyStart) - scope.MatchTime);
        return new Outcome(OutcomeKind.Applied, evt, null, result.Cohort?.Version ?? 0, scope.Statistics.Received, scope.Statistics.Matched);
    }

    /// <summary>Kinds whose handler locks the workspace and cohort rows (an empty change list touches no cohort).</summary>
    private static bool LocksCohort(CohortExportReceived m) =>
        Invalid(m) is null
        && (m.Kind is CohortExportKind.Name or CohortExportKind.Archive || (m.Kind == CohortExportKind.Changes && m.Changes is { Count: > 0 }));

    private enum OutcomeKind
    {
        Applied,
        Redelivered,
        Failed,
    }

    /// <summary>What applying one import did: the event to publish and what to log after commit.</summary>
    private readonly record struct Outcome(OutcomeKind Kind, CohortUpdated? Event, string? Detail, long Version, long Received, long Matched);

    /// <summary>Marks a still-processing import failed (its message is going to the error queue).</summary>
    public async Task MarkFailedAsync(CohortExportReceived message, CancellationToken ct)
    {
        const string error = RetriesExhausted;
        try
        {
            await using var conn = await dataSource.OpenConnectionAsync(ct);
            await using var tx = await conn.BeginTransactionAsync(ct);
            var record = await ImportRepository.LockAsync(conn, tx, message.ImportId, ct);
            if (record is { Status: ImportStatus.Processing })
            {
                await ImportRepository.CompleteAsync(conn, tx, message.ImportId, ImportStatus.Failed, new ImportStatistics(), null, null, error, null, ct);
            }

            // The cohort's later requests need not wait out the gap timeout for one that is in the error queue.
            await CohortSequences.AdvanceAsync(conn, tx, message, ct);
            await tx.CommitAsync(ct);
            sequenceGate.Advanced();
            Log.Failed(logger, message.WorkspaceId, message.CohortId, message.ImportId, error);
        }
        catch (NpgsqlException)
        {
            // The database is what failed: the import stays "processing" and the message waits in the error queue.
        }
    }

    private static string? Invalid(CohortExportReceived m) =>
        string.IsNullOrEmpty(m.WorkspaceId) || m.WorkspaceId.Length > 63 ? "invalid workspace_id"
        : string.IsNullOrEmpty(m.Partner) || m.Partner.Length > 63 ? "invalid partner"
        : string.IsNullOrEmpty(m.CohortId) || m.CohortId.Length > 255 ? "invalid cohort_id"
        : null;

    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Information,
            Message = "Applied import {ImportId} to cohort {CohortId} of {WorkspaceId}: version {Version}, {Received} received, {Matched} matched")]
        public static partial void Applied(ILogger logger, string workspaceId, string cohortId, Guid importId, long version, long received, long matched);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information,
            Message = "Import {ImportId} for cohort {CohortId} of {WorkspaceId} was already {Status}; publishing its stored outcome again")]
        public static partial void Redelivered(ILogger logger, string workspaceId, string cohortId, Guid importId, string status);

        [LoggerMessage(EventId = 102, Level = LogLevel.Warning,
            Message = "Import {ImportId} for cohort {CohortId} of {WorkspaceId} failed: {Error}")]
        public static partial void Failed(ILogger logger, string workspaceId, string cohortId, Guid importId, string error);
    }
}
