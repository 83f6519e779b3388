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
    IOptions<CohortsOptions> options,
    ILogger<ImportProcessor> logger)
{
    public const string SnapshotNotSupported = "snapshot imports are not supported by this version";

    /// <summary>Set when a message exhausted its retries: nothing was applied, so a message moved back applies it.</summary>
    public const string RetriesExhausted = "the import could not be applied; an operator has been alerted";

    private readonly Dictionary<CohortExportKind, IImportHandler> _handlers = handlers.ToDictionary(h => h.Kind);

    /// <summary>Returns the event to publish after commit (null when the import changed no cohort).</summary>
    public async Task<CohortUpdated?> ProcessAsync(CohortExportReceived message, CancellationToken ct)
    {
        await ImportRepository.RegisterAsync(dataSource, message, ct);

        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var record = await ImportRepository.LockAsync(conn, tx, message.ImportId, ct)
            ?? throw new InvalidOperationException($"Import {message.ImportId} was not registered.");
        var retryable = record.Status == ImportStatus.Failed && record.Error == RetriesExhausted;
        if (record.Status != ImportStatus.Processing && !retryable)
        {
            await tx.CommitAsync(ct);
            Log.Redelivered(logger, message.WorkspaceId, message.CohortId, message.ImportId, record.Status);
            return record.PendingEvent is null ? null : CohortEvents.Deserialize(record.PendingEvent);
        }

        var scope = new ImportScope(conn, tx, message);
        if (Invalid(message) is { } invalid)
        {
            await ImportRepository.CompleteAsync(conn, tx, message.ImportId, ImportStatus.Failed, scope.Statistics, null, null, invalid, null, ct);
            await tx.CommitAsync(ct);
            Log.Failed(logger, message.WorkspaceId, message.CohortId, message.ImportId, invalid);
            return null;
        }

        if (!_handlers.TryGetValue(message.Kind, out var handler))
        {
            var error = message.Kind == CohortExportKind.SnapshotChunk ? SnapshotNotSupported : $"unknown import kind {message.Kind}";
            await ImportRepository.CompleteAsync(conn, tx, message.ImportId, ImportStatus.Failed, scope.Statistics, null, null, error, null, ct);
            await tx.CommitAsync(ct);
            Log.Failed(logger, message.WorkspaceId, message.CohortId, message.ImportId, error);
            return null;
        }

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
        await tx.CommitAsync(ct);
        Log.Applied(logger, message.WorkspaceId, message.CohortId, message.ImportId, result.Cohort?.Version ?? 0,
            scope.Statistics.Received, scope.Statistics.Matched);

        if (options.Value.TestHooks.CrashAfterCommitImportId == message.ImportId)
        {
            Environment.FailFast("Test hook: crash after commit, before publish.");
        }

        return evt;
    }

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

            await tx.CommitAsync(ct);
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
