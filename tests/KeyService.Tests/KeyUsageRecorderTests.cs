using CohortBridge.KeyService.Keys;

namespace CohortBridge.KeyService.Tests;

/// <summary>The in-memory collector of key uses, under the concurrency it meets: requests recording while a flush drains.</summary>
public sealed class KeyUsageRecorderTests
{
    [Fact]
    public async Task Record_WhileDrainsRunConcurrently_EveryUseIsDrainedOnce()
    {
        var recorder = new KeyUsageRecorder();
        var keys = Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, 50_000).Select(_ => Guid.NewGuid()).ToArray()).ToArray();
        var usedAt = new DateTime(2026, 11, 23, 12, 0, 0, DateTimeKind.Utc);
        var drained = new List<IReadOnlyDictionary<Guid, DateTime>>();
        using var stop = new CancellationTokenSource();

        var drainer = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                // Copied at once, as the flusher reads a batch right after taking it.
                drained.Add(recorder.Drain().ToDictionary());
            }
        });
        Parallel.ForEach(keys, own =>
        {
            foreach (var key in own)
            {
                recorder.Record(key, usedAt);
            }
        });
        stop.Cancel();
        await drainer;
        drained.Add(recorder.Drain());

        var all = drained.SelectMany(d => d.Keys).ToList();
        Assert.Equal(keys.Sum(k => k.Length), all.Count);
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.All(drained.SelectMany(d => d.Values), t => Assert.Equal(usedAt, t));
    }

    [Fact]
    public void Record_SameKeyTwice_KeepsTheLaterTime()
    {
        var recorder = new KeyUsageRecorder();
        var key = Guid.NewGuid();
        var later = new DateTime(2026, 11, 23, 12, 0, 0, DateTimeKind.Utc);

        recorder.Record(key, later);
        recorder.Record(key, later.AddMinutes(-5));

        Assert.Equal(KeyValuePair.Create(key, later), Assert.Single(recorder.Drain()));
        Assert.Empty(recorder.Drain());
    }
}
