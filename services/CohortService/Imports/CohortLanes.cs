using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Group commit of change imports per cohort, in request order. Every import of a cohort that this process holds waits
/// in the cohort's lane for its turn (<see cref="SequenceGate"/>). The one whose turn comes leads: it takes itself and the
/// waiting imports that directly follow it (sequence + 1, + 2, ...; or, without sequences, every waiting one) and
/// applies them in one transaction; the others find themselves applied when their turn comes. So while one batch is
/// being written the next one gathers, and a busy cohort is written in a few large transactions instead of many small
/// ones. Should a batch fail, its imports are applied one by one, so that one bad import cannot fail the others.
/// </summary>
public sealed class CohortLanes(SequenceGate sequenceGate, IOptions<CohortsOptions> options)
{
    private readonly Dictionary<string, Lane> _lanes = new(StringComparer.Ordinal);

    public delegate Task<CohortUpdated?[]> ApplyBatch(
        IReadOnlyList<CohortExportReceived> imports, IReadOnlyList<Task<MatchedChanges?>> prepared, CancellationToken ct);

    /// <summary>
    /// Returns the event to publish for <paramref name="message"/> once it is applied (by this call or a batch leader).
    /// <paramref name="prepared"/> is its match, running while it waits (<see cref="ChangesBatch.PrepareAsync"/>).
    /// </summary>
    public async Task<CohortUpdated?> ApplyInTurnAsync(
        CohortExportReceived message, Task<MatchedChanges?> prepared, ApplyBatch apply, CancellationToken ct)
    {
        var key = CohortSequences.Key(message);
        var lane = Enter(key);
        var mine = new Waiting(message, prepared);
        lock (lane)
        {
            lane.Waiting.Add(mine);
        }

        try
        {
            while (true)
            {
                await sequenceGate.WaitForTurnAsync(message, ct);
                if (mine.Done.Task.IsCompleted)
                {
                    return await mine.Done.Task;
                }

                await lane.Leader.WaitAsync(ct);
                try
                {
                    if (!mine.Done.Task.IsCompleted)
                    {
                        await LeadAsync(lane, mine, apply, ct);
                    }
                }
                finally
                {
                    lane.Leader.Release();
                }

                if (mine.Done.Task.IsCompleted)
                {
                    return await mine.Done.Task;
                }
            }
        }
        finally
        {
            lock (lane)
            {
                lane.Waiting.Remove(mine);
            }

            Leave(key, lane);
        }
    }

    private async Task LeadAsync(Lane lane, Waiting leader, ApplyBatch apply, CancellationToken ct)
    {
        List<Waiting> batch = [leader];
        lock (lane)
        {
            var identifiers = Identifiers(leader.Message);
            var limit = options.Value.BatchMaxIdentifiers;
            foreach (var next in lane.Waiting.Where(w => w != leader && !w.Done.Task.IsCompleted).OrderBy(w => w.Message.Sequence ?? long.MaxValue))
            {
                var follows = leader.Message.Sequence is null
                    ? next.Message.Sequence is null
                    : next.Message.Sequence == batch[^1].Message.Sequence + 1;
                if (!follows || identifiers + Identifiers(next.Message) > limit)
                {
                    break;
                }

                identifiers += Identifiers(next.Message);
                batch.Add(next);
            }
        }

        try
        {
            var events = await apply([.. batch.Select(w => w.Message)], [.. batch.Select(w => w.Prepared)], ct);
            for (var i = 0; i < batch.Count; i++)
            {
                batch[i].Done.TrySetResult(events[i]);
            }
        }
        catch (Exception) when (batch.Count > 1 && !ct.IsCancellationRequested)
        {
            foreach (var w in batch)
            {
                try
                {
                    w.Done.TrySetResult((await apply([w.Message], [w.Prepared], ct))[0]);
                }
                catch (Exception ex)
                {
                    w.Done.TrySetException(ex);
                }
            }
        }
        catch (Exception ex)
        {
            foreach (var w in batch)
            {
                w.Done.TrySetException(ex);
            }
        }
    }

    private static int Identifiers(CohortExportReceived m) =>
        m.Changes?.Sum(c => c.ExternalIds.Count + c.Aliases.Count + c.DeviceIds.Count + c.InvalidIdentifiers.Count) ?? 0;

    private Lane Enter(string key)
    {
        lock (_lanes)
        {
            if (!_lanes.TryGetValue(key, out var lane))
            {
                _lanes[key] = lane = new Lane();
            }

            lane.Users++;
            return lane;
        }
    }

    private void Leave(string key, Lane lane)
    {
        lock (_lanes)
        {
            if (--lane.Users == 0)
            {
                _lanes.Remove(key);
            }
        }
    }

    private sealed class Lane
    {
        public SemaphoreSlim Leader { get; } = new(1, 1);
        public List<Waiting> Waiting { get; } = [];
        public int Users { get; set; }
    }

    private sealed class Waiting(CohortExportReceived message, Task<MatchedChanges?> prepared)
    {
        public CohortExportReceived Message { get; } = message;
        public Task<MatchedChanges?> Prepared { get; } = prepared;
        public TaskCompletionSource<CohortUpdated?> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
