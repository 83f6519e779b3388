using System.Collections.Concurrent;
using System.Diagnostics;
using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Holds an import back until its cohort's previous request (sequence - 1) is applied, so a cohort's requests apply
/// in the order the gateway accepted them even when the broker hands them to consumers, threads or replicas in another
/// order. Waiting needs no lock: the predecessor is applied by whichever consumer holds it, and that commit moves
/// <c>cohort_sequences.applied</c>. A predecessor that never comes (the gateway took a number, then the publish
/// failed and the partner got a 503) is given up after <see cref="CohortsOptions.SequenceGapTimeout"/>: the gap is
/// recorded as passed (so every waiter, in any replica, sees it) and the import applies (logged and counted), because a
/// 202 promises it will be applied. Should the missing request arrive after all, it is applied late, not dropped.
/// </summary>
public sealed partial class SequenceGate(NpgsqlDataSource dataSource, IOptions<CohortsOptions> options, ILogger<SequenceGate> logger)
{
    /// <summary>Other replicas' commits are seen by polling at most this far apart.</summary>
    private static readonly TimeSpan MaxPoll = TimeSpan.FromMilliseconds(100);

    private TaskCompletionSource<bool> _pulse = NewPulse();

    /// <summary>
    /// Sequences known to be applied, per cohort (a lower bound of <c>cohort_sequences.applied</c>: only committed
    /// values go in). Bounded by the cohorts this process imported into: one small entry each.
    /// </summary>
    private readonly ConcurrentDictionary<string, long> _applied = new(StringComparer.Ordinal);

    /// <summary>
    /// The latest database read per cohort, shared by every waiter of that cohort in this process: each waiter polls
    /// on its own back-off, so without sharing a busy cohort with 100 imports waiting read cohort_sequences over 1,000
    /// times a second (measured: 24 reads per applied import), which cost PostgreSQL more than the imports' own writes.
    /// </summary>
    private readonly ConcurrentDictionary<string, SharedRead> _reads = new(StringComparer.Ordinal);

    /// <summary>A read started this recently (or still running) answers a waiter's poll instead of a read of its own.</summary>
    private static readonly TimeSpan ShareReadsWithin = TimeSpan.FromMilliseconds(20);

    private long _databaseReads;

    /// <summary>Reads of cohort_sequences this gate has made (shared reads count once).</summary>
    public long DatabaseReads => Interlocked.Read(ref _databaseReads);

    /// <summary>
    /// Returns once the message may be applied: true in order, false when the predecessor was given up.
    /// Messages without a sequence pass at once.
    /// </summary>
    public async Task<bool> WaitForTurnAsync(CohortExportReceived message, CancellationToken ct)
    {
        if (message.Sequence is not { } sequence || sequence <= 1)
        {
            return true;
        }

        if (options.Value.SequenceGapTimeout <= TimeSpan.Zero)
        {
            return true;
        }

        var start = Stopwatch.GetTimestamp();
        var key = CohortSequences.Key(message);
        var poll = TimeSpan.FromMilliseconds(5);
        var readDatabase = true;
        while (true)
        {
            // Take the pulse before reading, so a commit between the read and the wait still wakes us.
            var pulse = Volatile.Read(ref _pulse).Task;
            var applied = _applied.GetValueOrDefault(key);
            if (applied < sequence - 1 && readDatabase)
            {
                applied = await ReadAppliedAsync(key, message).WaitAsync(ct);
            }

            if (applied >= sequence - 1)
            {
                ImportMetrics.SequenceWait(ImportMetrics.Since(start));
                return true;
            }

            var waited = ImportMetrics.Since(start);
            if (waited >= options.Value.SequenceGapTimeout)
            {
                ImportMetrics.SequenceWait(waited);
                ImportMetrics.SequenceGapSkipped();
                Log.GapSkipped(logger, message.WorkspaceId, message.Partner, message.CohortId, message.ImportId, sequence, applied, waited.TotalSeconds);
                await GiveUpPredecessorsAsync(message, sequence, ct);
                return false;
            }

            // A commit in this process whose sequence the pulse brought (true) is known here; a commit elsewhere (poll)
            // or one that did not say its sequence (false: a snapshot finished by another chunk) needs the database.
            var woke = await Task.WhenAny(pulse, Task.Delay(poll, ct));
            readDatabase = woke != pulse || !pulse.Result;
            ct.ThrowIfCancellationRequested();
            poll = poll * 2 < MaxPoll ? poll * 2 : MaxPoll;
        }
    }

    /// <summary>
    /// The cohort's applied sequence from the database, read at most once per <see cref="ShareReadsWithin"/> for all
    /// of this process's waiters of that cohort. A waiter cancelled meanwhile stops waiting; the read itself runs on
    /// (one short query) for the others.
    /// </summary>
    private Task<long> ReadAppliedAsync(string key, CohortExportReceived message)
    {
        var read = _reads.GetOrAdd(key, static _ => new SharedRead());
        lock (read)
        {
            var fresh = read.Task is { IsFaulted: false, IsCanceled: false }
                && (!read.Task.IsCompleted || Stopwatch.GetElapsedTime(read.StartedAt) < ShareReadsWithin);
            if (!fresh)
            {
                read.StartedAt = Stopwatch.GetTimestamp();
                read.Task = ReadAsync();
            }

            return read.Task!;
        }

        async Task<long> ReadAsync()
        {
            Interlocked.Increment(ref _databaseReads);
            return Remember(key, await CohortSequences.AppliedAsync(dataSource, message, CancellationToken.None));
        }
    }

    private async Task GiveUpPredecessorsAsync(CohortExportReceived message, long sequence, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await CohortSequences.AdvanceAsync(conn, tx, message.WorkspaceId, message.Partner, message.CohortId, sequence - 1, ct);
        await tx.CommitAsync(ct);
        Remember(CohortSequences.Key(message), sequence - 1);
        Pulse(known: true);
    }

    /// <summary>
    /// Call after committing imports with sequences: waiters in this process look again at once (in the database, as
    /// this does not say which sequence is now applied).
    /// </summary>
    public void Advanced()
    {
        // Waiters must read again, and a shared read started before this commit may not have seen it.
        _reads.Clear();
        Pulse(known: false);
    }

    /// <summary>
    /// <see cref="Advanced()"/>, telling waiters the sequence now applied for the message's cohort, so that they need
    /// not ask the database.
    /// </summary>
    public void Advanced(CohortExportReceived message)
    {
        if (message.Sequence is not { } sequence)
        {
            Advanced();
            return;
        }

        Remember(CohortSequences.Key(message), sequence);
        Pulse(known: true);
    }

    private long Remember(string key, long applied) =>
        _applied.AddOrUpdate(key, applied, (_, known) => Math.Max(known, applied));

    private void Pulse(bool known) => Interlocked.Exchange(ref _pulse, NewPulse()).TrySetResult(known);

    private static TaskCompletionSource<bool> NewPulse() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private sealed class SharedRead
    {
        public Task<long>? Task { get; set; }

        public long StartedAt { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 110, Level = LogLevel.Warning,
            Message = "Import {ImportId} for cohort {CohortId} of {WorkspaceId}/{Partner} has sequence {Sequence} but only {Applied} is applied after {Seconds:0.#} s; applying it without waiting longer for the missing request")]
        public static partial void GapSkipped(ILogger logger, string workspaceId, string partner, string cohortId, Guid importId, long sequence, long applied, double seconds);
    }
}
