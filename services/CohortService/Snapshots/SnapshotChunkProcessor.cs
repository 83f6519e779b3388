using System.Diagnostics;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Imports;
using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Snapshots;

/// <summary>
/// Applies the chunks of a streamed snapshot (<see cref="CohortExportKind.SnapshotChunk"/>).
/// Each chunk, once: its valid identifiers are binary-COPYed, as sent, into the snapshot's staging table, and its
/// counts (received, invalid) are recorded on its chunk row (progress). When chunks 0..ChunkCount-1 are all staged,
/// whichever chunk completed the set matches them all with one statement (the rules of <see cref="IdentityMatcher"/>)
/// and replaces the cohort's membership in one transaction: removed = members EXCEPT matched, added = matched EXCEPT
/// members, one version, one change-log entry, one CohortUpdated (MustReread when large), staging dropped. An aborted snapshot, or one the
/// sweeper times out, changes nothing: the import fails and its staging is dropped.
/// The replacement also waits for its turn in the cohort's request order: the last chunk carries the snapshot's
/// sequence; its consumer stages, then waits for the previous request (<see cref="SequenceGate"/>); a chunk that
/// completes the set before that turn leaves the replacement to the last chunk's consumer.
/// </summary>
public sealed partial class SnapshotChunkProcessor(
    NpgsqlDataSource dataSource, SequenceGate sequenceGate, MatchingSlots matchingSlots, IOptions<CohortsOptions> options,
    ILogger<SnapshotChunkProcessor> logger)
{
    public const string InvalidChunk = "snapshot chunk without content";

    /// <summary>Returns the CohortUpdated to publish after commit (null when this chunk did not finish the snapshot).</summary>
    public async Task<CohortUpdated?> ProcessAsync(CohortExportReceived message, CancellationToken ct)
    {
        await ImportProcessor.RegisterAsync(dataSource, message, options.Value, logger, ct);
        await SnapshotRepository.EnsureAsync(dataSource, message, ct);
        if (message.Snapshot is not { } chunk || chunk.Sequence < 0 || (chunk.IsLast && chunk.ChunkCount is not > 0))
        {
            await FailAsync(message.ImportId, InvalidChunk, ct);
            return null;
        }

        if (chunk.Aborted)
        {
            await FailAsync(message.ImportId, "the snapshot stream broke off: " + (chunk.AbortReason ?? "no reason given"), ct);
            return null;
        }

        await StageAsync(message, chunk, ct);
        if (chunk.IsLast)
        {
            await sequenceGate.WaitForTurnAsync(message, ct);
        }

        var (evt, finished) = await TryCompleteAsync(message, ct);
        if (finished)
        {
            sequenceGate.Advanced();
        }

        return evt;
    }

    private async Task StageAsync(CohortExportReceived m, SnapshotChunk chunk, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var state = await SnapshotRepository.LockSharedAsync(conn, tx, m.ImportId, ct);
        if (state != SnapshotState.Staging || await SnapshotRepository.IsChunkStagedAsync(conn, tx, m.ImportId, chunk.Sequence, ct))
        {
            // Finished already, or a redelivered chunk: staged once.
            await tx.CommitAsync(ct);
            return;
        }

        var (identifiers, invalid) = Split(chunk);
        var received = identifiers.Count + invalid.Count;
        var invalidStats = new ImportStatistics();
        invalidStats.Count(invalid);
        if (!await SnapshotRepository.InsertChunkAsync(conn, tx, m.ImportId, chunk, received, invalidStats, ct))
        {
            // A concurrent delivery of this chunk committed first.
            await tx.RollbackAsync(ct);
            return;
        }

        if (chunk.IsLast && m.Sequence is { } sequence)
        {
            await SnapshotRepository.SetSequenceAsync(conn, tx, m.ImportId, sequence, ct);
        }

        await SnapshotRepository.StageIdentifiersAsync(conn, m.ImportId, identifiers, ct);
        await tx.CommitAsync(ct);
        Log.ChunkStaged(logger, m.ImportId, chunk.Sequence, received, invalid.Count);
    }

    /// <summary>
    /// The chunk's identifiers to stage, and the invalid ones (counted at once, by the rules of
    /// <see cref="IdentityMatcher"/>): empty, too long, an alias without name or label, or a line the gateway could not read.
    /// </summary>
    private static (List<StagedIdentifier> Valid, List<IdentifierOutcome> Invalid) Split(SnapshotChunk chunk)
    {
        var valid = new List<StagedIdentifier>(chunk.ExternalIds.Count + chunk.Aliases.Count + chunk.DeviceIds.Count);
        var invalid = new List<IdentifierOutcome>();
        foreach (var id in chunk.ExternalIds)
        {
            Add(IdentifierKind.ExternalId, id);
        }

        foreach (var alias in chunk.Aliases)
        {
            if (IdentityMatcher.IsValidAlias(alias))
            {
                valid.Add(new StagedIdentifier(IdentifierKind.Alias, alias.AliasName, alias.AliasLabel));
            }
            else
            {
                invalid.Add(IdentityMatcher.Invalid(IdentifierKind.Alias, IdentityMatcher.Display(alias)));
            }
        }

        foreach (var id in chunk.DeviceIds)
        {
            Add(IdentifierKind.DeviceId, id);
        }

        foreach (var raw in chunk.InvalidIdentifiers)
        {
            invalid.Add(IdentityMatcher.Invalid(IdentifierKind.Invalid, raw));
        }

        return (valid, invalid);

        void Add(IdentifierKind kind, string? value)
        {
            if (IdentityMatcher.IsValid(value))
            {
                valid.Add(new StagedIdentifier(kind, value!, null));
            }
            else
            {
                invalid.Add(IdentityMatcher.Invalid(kind, value));
            }
        }
    }

    /// <summary>
    /// Completes the snapshot when every chunk is staged and its turn in the cohort's order has come; on a finished one
    /// returns its stored event again.
    /// <c>Finished</c>: the snapshot is completed or failed now.
    /// </summary>
    private async Task<(CohortUpdated? Event, bool Finished)> TryCompleteAsync(CohortExportReceived m, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var (staged, chunkCount, _) = await SnapshotRepository.ProgressAsync(conn, null, m.ImportId, ct);
        var maybeComplete = chunkCount is { } n && staged >= n;

        await using var tx = await conn.BeginTransactionAsync(ct);
        var state = maybeComplete
            ? await SnapshotRepository.LockAsync(conn, tx, m.ImportId, ct)
            : await SnapshotRepository.LockSharedAsync(conn, tx, m.ImportId, ct);
        if (state == SnapshotState.Completed)
        {
            var done = await ImportRepository.LockAsync(conn, tx, m.ImportId, ct);
            await tx.CommitAsync(ct);
            return (done?.PendingEvent is { } json ? CohortEvents.Deserialize(json) : null, true);
        }

        if (state != SnapshotState.Staging || !maybeComplete)
        {
            await tx.CommitAsync(ct);
            return (null, state is not SnapshotState.Staging);
        }

        // Re-count under the exclusive lock: no chunk is staging now.
        (staged, chunkCount, var identifiers) = await SnapshotRepository.ProgressAsync(conn, tx, m.ImportId, ct);
        if (chunkCount is not { } count || staged < count || !await IsTurnAsync(conn, tx, m.ImportId, ct))
        {
            await tx.CommitAsync(ct);
            return (null, false);
        }

        var import = await ImportRepository.LockAsync(conn, tx, m.ImportId, ct);
        if (import is not { Status: ImportStatus.Processing })
        {
            // Failed meanwhile (retries exhausted): nothing to apply, only staging to remove.
            await SnapshotRepository.FinishAsync(conn, tx, m.ImportId, SnapshotState.Failed, ct);
            await tx.CommitAsync(ct);
            return (null, true);
        }

        if (staged > count)
        {
            // Chunks beyond the announced count: the snapshot is inconsistent, apply nothing.
            const string error = "snapshot chunks do not match the announced chunk count";
            await SnapshotRepository.FailImportAsync(conn, tx, m.ImportId, error, ct);
            await SnapshotRepository.FinishAsync(conn, tx, m.ImportId, SnapshotState.Failed, ct);
            await tx.CommitAsync(ct);
            Log.Failed(logger, m.WorkspaceId, m.CohortId, m.ImportId, error);
            return (null, true);
        }

        var evt = await ReplaceMembershipAsync(conn, tx, m, identifiers, ct);
        await tx.CommitAsync(ct);
        return (evt, true);
    }

    /// <summary>Ordering off (<see cref="CohortsOptions.SequenceGapTimeout"/> zero): always the snapshot's turn.</summary>
    private async Task<bool> IsTurnAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, CancellationToken ct) =>
        options.Value.SequenceGapTimeout <= TimeSpan.Zero || await SnapshotRepository.IsTurnAsync(conn, tx, importId, ct);

    /// <summary>
    /// Matches the staged identifiers and replaces the cohort's membership with the users they name. The match, the
    /// longest step, runs before the directory lock is taken, so directory writes go on meanwhile; it is used only if
    /// no directory write came in between (an unchanged directory_version under the lock), else it is redone under the
    /// lock, so a user deleted meanwhile is never added.
    /// </summary>
    private async Task<CohortUpdated?> ReplaceMembershipAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, CohortExportReceived m, long identifiers, CancellationToken ct)
    {
        var start = Stopwatch.GetTimestamp();
        var directory = await SnapshotRepository.DirectoryAsync(conn, tx, m.WorkspaceId, ct);
        // Index look-ups for a snapshot small next to the directory: hashing every user costs more than looking up each.
        var indexLookups = identifiers * 8 < (directory?.Users ?? 0);
        // At most Cohorts:MatchConcurrency matches at once in this process: a large one hashes millions of identifiers
        // in up to 1 GB of database memory (work_mem 512MB, hash_mem_multiplier 2) on one core for tens of seconds.
        Task<(OrdinalSet, ImportStatistics)> MatchAsync() => matchingSlots.RunAsync(
            () => SnapshotRepository.MatchStagedAsync(conn, tx, m.WorkspaceId, m.ImportId, indexLookups, ct), ct);
        var (users, stats) = await MatchAsync();
        var directoryVersion = await CohortRepository.LockWorkspaceSharedAsync(conn, tx, m.WorkspaceId, ct);
        if (directory?.DirectoryVersion != directoryVersion)
        {
            (users, stats) = await MatchAsync();
        }

        var matchTime = ImportMetrics.Since(start);
        ImportMetrics.Match(matchTime);
        start = Stopwatch.GetTimestamp();
        var (cohort, created) = await CohortRepository.LockOrCreateCohortAsync(
            conn, tx, m.WorkspaceId, m.Partner, m.CohortId, m.CohortId, null, ct);
        var revived = cohort.Archived;
        cohort.Archived = false;

        var members = created ? new OrdinalSet() : await SnapshotRepository.MembersAsync(conn, tx, cohort.Id, ct);
        var removed = members.Except(users);
        var added = users.Except(members);
        await CohortRepository.DeleteMembersAsync(conn, tx, cohort.Id, removed, ct);
        await CohortRepository.CopyMembersAsync(conn, cohort.Id, added, ct);
        var changed = created || revived || added.Length > 0 || removed.Length > 0;
        CohortUpdated? evt = null;
        if (changed)
        {
            await CohortRepository.CommitVersionAsync(
                conn, tx, cohort, added, removed, m.ImportId, DateTimeOffset.UtcNow, options.Value.ChangeLogSetLimit, ct);
            evt = await CohortEvents.BuildAsync(conn, tx, cohort, added, removed, m.ImportId, options.Value.InlineChangeLimit, ct);
        }

        await SnapshotRepository.FinishAsync(conn, tx, m.ImportId, SnapshotState.Completed, ct);
        await SnapshotRepository.AddMatchAsync(conn, tx, m.ImportId, stats, ct);
        await SnapshotRepository.CompleteImportAsync(
            conn, tx, m.ImportId, added.Length, removed.Length, cohort.Id, cohort.Version, evt is null ? null : CohortEvents.Serialize(evt), ct);
        var applyTime = ImportMetrics.Since(start);
        ImportMetrics.Apply(applyTime);
        Log.Completed(logger, m.WorkspaceId, m.CohortId, m.ImportId, cohort.Version, added.Length, removed.Length,
            stats.Received, matchTime.TotalSeconds, applyTime.TotalSeconds);
        return evt;
    }

    /// <summary>Fails a snapshot that is still staging (abort, timeout) and drops its staging; changes no cohort.</summary>
    public async Task<bool> FailAsync(Guid importId, string error, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var state = await SnapshotRepository.LockAsync(conn, tx, importId, ct);
        if (state != SnapshotState.Staging)
        {
            await tx.CommitAsync(ct);
            return false;
        }

        var import = await ImportRepository.LockAsync(conn, tx, importId, ct);
        await SnapshotRepository.FailImportAsync(conn, tx, importId, error, ct);
        await SnapshotRepository.FinishAsync(conn, tx, importId, SnapshotState.Failed, ct);
        await tx.CommitAsync(ct);
        sequenceGate.Advanced();
        Log.Failed(logger, import?.WorkspaceId ?? "", import?.CohortId ?? "", importId, error);
        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 400, Level = LogLevel.Debug,
            Message = "Staged chunk {Sequence} of snapshot {ImportId}: {Received} identifiers, {Invalid} invalid")]
        public static partial void ChunkStaged(ILogger logger, Guid importId, int sequence, long received, long invalid);

        [LoggerMessage(EventId = 401, Level = LogLevel.Information,
            Message = "Applied snapshot {ImportId} to cohort {CohortId} of {WorkspaceId}: version {Version}, {Added} added, {Removed} removed; {Identifiers} staged identifiers matched in {MatchSeconds:F2} s, membership written in {ApplySeconds:F2} s")]
        public static partial void Completed(
            ILogger logger, string workspaceId, string cohortId, Guid importId, long version, int added, int removed,
            long identifiers, double matchSeconds, double applySeconds);

        [LoggerMessage(EventId = 402, Level = LogLevel.Warning,
            Message = "Snapshot {ImportId} for cohort {CohortId} of {WorkspaceId} failed: {Error}")]
        public static partial void Failed(ILogger logger, string workspaceId, string cohortId, Guid importId, string error);
    }
}
