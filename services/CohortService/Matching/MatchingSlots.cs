using Microsoft.Extensions.Options;

namespace CohortBridge.CohortService.Matching;

/// <summary>
/// How many matches run at once in this process (<see cref="CohortsOptions.MatchConcurrency"/>): change imports
/// matched ahead of their turn and completing snapshots' matches. Each keeps a database core busy (index look-ups, or a
/// snapshot's hash join), so more of them side by side than the database has cores only adds contention: when 32
/// snapshot chunks were matched at once on two cores, each backend also paid page faults and cache misses of its own.
/// </summary>
public sealed class MatchingSlots(IOptions<CohortsOptions> options)
{
    private readonly SemaphoreSlim _slots = new(Math.Max(1, options.Value.MatchConcurrency));

    public async Task<T> RunAsync<T>(Func<Task<T>> match, CancellationToken ct)
    {
        await _slots.WaitAsync(ct);
        try
        {
            return await match();
        }
        finally
        {
            _slots.Release();
        }
    }

    public Task RunAsync(Func<Task> match, CancellationToken ct) =>
        RunAsync(async () =>
        {
            await match();
            return true;
        }, ct);
}
