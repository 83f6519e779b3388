using System.Diagnostics;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Applies a <see cref="CohortExportReceived"/> exactly once, in its cohort's request order. One transaction locks the
/// import row(s), applies the import (change imports set-based and grouped with those queued behind them:
/// <see cref="CohortLanes"/>, <see cref="ChangesBatch"/>; other kinds through the handler of their kind), bumps the
/// version, appends the change log and stores the statistics and the CohortUpdated to publish. A redelivered import finds its row completed and returns
/// the stored event, so the caller publishes the same (cohort, version) again.
/// </summary>
public sealed partial class ImportProcessor(
    NpgsqlDataSource dataSource,
    IEnumerable<IImportHandler> handlers,
    SequenceGate sequenceGate,
    CohortLanes lanes,
    MatchingSlots matchingSlots,
    IOptions<CohortsOptions> options,
    ILogger<ImportProcessor> logger)
{
    /// <summary>Set when a message exhausted its retries: nothing was applied, so a message moved back applies it.</summary>
    public const string RetriesExhausted = "the import could not be applied; an operator has been alerted";

    private readonly Dictionary<CohortExportKind, IImportHandler> _handlers = handlers.ToDictionary(h => h.Kind);

    /// <summary>
    /// Returns the event to publish after commit (null when the import changed no cohort). The import shows as
    /// processing at once, then waits for its turn in the cohort's request order (<see cref="SequenceGate"/>); change
    /// imports are grouped with the ones queued behind them (<see cref="CohortLanes"/>).
    /// </summary>
    public async Task<CohortUpdated?> ProcessAsync(CohortExportReceived message, CancellationToken ct)
    {
        await RegisterAsync(dataSource, message, options.Value, logger, ct);
        if (IsSetBased(message))
        {
            return await lanes.ApplyInTurnAsync(message, PrepareOrNullAsync(message, ct), ApplyChangesAsync, ct);
        }

        await sequenceGate.WaitForTurnAsync(message, ct);
        return await ApplyRegisteredAsync(message, ct);
    }

    /// <summary>
    /// Registers the import (<see cref="ImportRepository.RegisterAsync"/>), or refuses it when it was accepted before
    /// imports were deleted (<see cref="CohortsOptions.ImportRetention"/>) and has no import row
    /// (<see cref="ImportExpiredException"/>).
    /// </summary>
    internal static async Task RegisterAsync(
        NpgsqlDataSource dataSource, CohortExportReceived message, CohortsOptions options, ILogger logger, CancellationToken ct)
    {
        if (!await ImportRepository.RegisterAsync(dataSource, message, ct))
        {
            throw Refuse(message, options, logger);
        }
    }

    private static ImportExpiredException Refuse(CohortExportReceived message, CohortsOptions options, ILogger logger)
    {
        ImportMetrics.ExpiredRefused();
        Log.Expired(logger, message.WorkspaceId, message.CohortId, message.ImportId, message.OccurredAt, options.ImportRetention);
        return new ImportExpiredException(message, options.ImportRetention);
    }

    /// <summary>
    /// Matches a change import while it waits for its turn. Null when that failed (e.g. the database was briefly
    /// unavailable): the import is then matched when it is applied, so nothing is lost but the head start.
    /// </summary>
    private async Task<MatchedChanges?> PrepareOrNullAsync(CohortExportReceived message, CancellationToken ct)
    {
        try
        {
            // Matching ahead needs no more parallelism than the database has cores: more only takes CPU from the
            // transaction that writes a busy cohort's memberships, which is what limits its throughput.
            return await matchingSlots.RunAsync<MatchedChanges?>(async () => await ChangesBatch.PrepareAsync(dataSource, message, ct), ct);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            Log.PrepareFailed(logger, message.WorkspaceId, message.CohortId, message.ImportId, ex.Message);
            return null;
        }
    }

    /// <summary>Matches a change import ahead of its turn, for <see cref="ProcessBatchAsync"/>.</summary>
    public Task<MatchedChanges> PrepareAsync(CohortExportReceived message, CancellationToken ct) =>
        ChangesBatch.PrepareAsync(dataSource, message, ct);

    /// <summary>Valid change imports that touch a cohort: applied set-based, several at once (<see cref="ChangesBatch"/>).</summary>
    private static bool IsSetBased(CohortExportReceived m) =>
        m.Kind == CohortExportKind.Changes && m.Changes is { Count: > 0 } && Invalid(m) is null;

    /// <summary>
    /// Applies several change imports of ONE cohort in one transaction, in list order (what a cohort lane does with
    /// the imports queued behind each other): each still gets its own import row, statistics, version (+1 per changing
    /// import, in this order) and CohortUpdated; an import already applied is skipped and its stored event returned
    /// again. Returns the event to publish for each message (null when none). Any failure rolls back the whole
    /// transaction (nothing applied). <c>prepared</c>: per message, its <see cref="PrepareAsync"/> result, or none
    /// (matched when applied).
    /// </summary>
    public async Task<CohortUpdated?[]> ProcessBatchAsync(
        IReadOnlyList<CohortExportReceived> messages, CancellationToken ct, IReadOnlyList<MatchedChanges?>? prepared = null)
    {
        if (!messages.All(IsSetBased) || messages.Select(CohortSequences.Key).Distinct().Count() != 1)
        {
            throw new ArgumentException("A batch holds change imports of one cohort, each with change sets.", nameof(messages));
        }

        var expired = await ImportRepository.RegisterManyAsync(dataSource, messages, ct);
        if (expired.Length > 0)
        {
            throw Refuse(messages.First(m => m.ImportId == expired[0]), options.Value, logger);
        }

        return await ApplyChangesAsync(messages, [.. messages.Select((_, i) => Task.FromResult(prepared?[i]))], ct);
    }

    /// <summary>
    /// Applies registered change imports of one cohort in one transaction with <see cref="ChangesBatch"/>: imports
    /// already applied (redelivered, or listed twice) return their stored event; the rest are applied in list order.
    /// </summary>
    private async Task<CohortUpdated?[]> ApplyChangesAsync(
        IReadOnlyList<CohortExportReceived> messages, IReadOnlyList<Task<MatchedChanges?>> prepared, CancellationToken ct)
    {
        // Before taking any lock: a match still running waits for the workspace share lock, and a directory write
        // queued for that row would otherwise wait for ours while we waited for the match.
        var matches = await Task.WhenAll(prepared);
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);

        // Lock order import rows (by id) -> workspace row -> cohort row, as everywhere else.
        var lockStart = Stopwatch.GetTimestamp();
        var records = await ImportRepository.LockRecordsAsync(conn, tx, [.. messages.Select(m => m.ImportId).Distinct()], ct);
        var todo = new List<int>();
        var events = new CohortUpdated?[messages.Count];
        var redelivered = new bool[messages.Count];
        for (var i = 0; i < messages.Count; i++)
        {
            var record = records.GetValueOrDefault(messages[i].ImportId)
                ?? throw new InvalidOperationException($"Import {messages[i].ImportId} was not registered.");
            var retryable = record.Status == ImportStatus.Failed && record.Error == RetriesExhausted;
            if ((record.Status != ImportStatus.Processing && !retryable) || todo.Any(t => messages[t].ImportId == messages[i].ImportId))
            {
                redelivered[i] = true;
                events[i] = record.PendingEvent is null ? null : CohortEvents.Deserialize(record.PendingEvent);
            }
            else
            {
                todo.Add(i);
            }
        }

        AppliedImport[] applied = [];
        if (todo.Count > 0)
        {
            var m = messages[todo[0]];
            var directoryVersion = await CohortRepository.LockWorkspaceSharedAsync(conn, tx, m.WorkspaceId, ct);
            var (cohort, created) = await CohortRepository.LockOrCreateCohortAsync(conn, tx, m.WorkspaceId, m.Partner, m.CohortId, m.CohortId, null, ct);
            ImportMetrics.LockWait(ImportMetrics.Since(lockStart));
            applied = await ChangesBatch.ApplyAsync(
                conn, tx, cohort, created, [.. todo.Select(t => messages[t])], [.. todo.Select(t => matches[t])], directoryVersion,
                options.Value.InlineChangeLimit, ct);
        }

        var last = messages.Where(m => m.Sequence is not null).MaxBy(m => m.Sequence);
        if (last is not null)
        {
            await CohortSequences.AdvanceAsync(conn, tx, last, ct);
        }

        var commitStart = Stopwatch.GetTimestamp();
        await tx.CommitAsync(ct);
        ImportMetrics.Commit(ImportMetrics.Since(commitStart));
        ImportMetrics.Batch(todo.Count);
        if (last is not null)
        {
            sequenceGate.Advanced(last);
        }
        else
        {
            sequenceGate.Advanced();
        }

        var byId = todo.Select((t, j) => (messages[t].ImportId, Result: applied[j])).ToDictionary(x => x.ImportId, x => x.Result);
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i];
            if (!redelivered[i])
            {
                var result = byId[message.ImportId];
                events[i] = result.Event;
                Log.Applied(logger, message.WorkspaceId, message.CohortId, message.ImportId, result.Version, result.Statistics.Received, result.Statistics.Matched);
            }
            else if (byId.TryGetValue(message.ImportId, out var twin))
            {
                events[i] = twin.Event;
            }
            else
            {
                Log.Redelivered(logger, message.WorkspaceId, message.CohortId, message.ImportId, records[message.ImportId].Status);
            }
        }

        if (options.Value.TestHooks.CrashAfterCommitImportId is { } crashId && messages.Any(m => m.ImportId == crashId))
        {
            Environment.FailFast("Test hook: crash after commit, before publish.");
        }

        return events;
    }

    /// <summary>Applies one registered import of any other kind (name, archive, credentials check, invalid message).</summary>
    private async Task<CohortUpdated?> ApplyRegisteredAsync(CohortExportReceived message, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);

        // Lock order import row -> workspace row -> cohort row, as everywhere else.
        var lockStart = Stopwatch.GetTimestamp();
        var record = await ImportRepository.LockAsync(conn, tx, message.ImportId, ct)
            ?? throw new InvalidOperationException($"Import {message.ImportId} was not registered.");
        if (LocksCohort(message))
        {
            await CohortRepository.LockWorkspaceSharedAsync(conn, tx, message.WorkspaceId, ct);
            await CohortRepository.LockCohortAsync(conn, tx, message.WorkspaceId, message.Partner, message.CohortId, ct);
        }

        ImportMetrics.LockWait(ImportMetrics.Since(lockStart));
        var outcome = await ApplyLockedAsync(conn, tx, message, record, ct);

        // Applied, failed or found applied already: either way this request's turn in the cohort's order is done.
        await CohortSequences.AdvanceAsync(conn, tx, message, ct);
        var commitStart = Stopwatch.GetTimestamp();
        await tx.CommitAsync(ct);
        sequenceGate.Advanced(message);
        ImportMetrics.Commit(ImportMetrics.Since(commitStart));
        ImportMetrics.Batch(1);

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

        if (options.Value.TestHooks.CrashAfterCommitImportId == message.ImportId)
        {
            Environment.FailFast("Test hook: crash after commit, before publish.");
        }

        return outcome.Event;
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
            sequenceGate.Advanced(message);
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
            Message = "Import {ImportId} for cohort {CohortId} of {WorkspaceId} was already {Status}; nothing is applied again, and its stored CohortUpdated is published again if it has one (not when it changed nothing; counts only after Cohorts:ReplayRetention)")]
        public static partial void Redelivered(ILogger logger, string workspaceId, string cohortId, Guid importId, string status);

        [LoggerMessage(EventId = 103, Level = LogLevel.Warning,
            Message = "Matching import {ImportId} for cohort {CohortId} of {WorkspaceId} ahead of its turn failed ({Error}); it is matched when applied")]
        public static partial void PrepareFailed(ILogger logger, string workspaceId, string cohortId, Guid importId, string error);

        [LoggerMessage(EventId = 102, Level = LogLevel.Warning,
            Message = "Import {ImportId} for cohort {CohortId} of {WorkspaceId} failed: {Error}")]
        public static partial void Failed(ILogger logger, string workspaceId, string cohortId, Guid importId, string error);

        [LoggerMessage(EventId = 104, Level = LogLevel.Warning,
            Message = "Import {ImportId} for cohort {CohortId} of {WorkspaceId} was accepted at {AcceptedAt:O}, before the imports deleted after Cohorts:ImportRetention (now {Retention}), and has no import row: whether it was applied cannot be told, so it is not applied and goes to the error queue")]
        public static partial void Expired(ILogger logger, string workspaceId, string cohortId, Guid importId, DateTimeOffset acceptedAt, TimeSpan retention);
    }
}
