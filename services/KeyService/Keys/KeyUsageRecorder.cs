using CohortBridge.KeyService.Data;
using Microsoft.Extensions.Options;

namespace CohortBridge.KeyService.Keys;

/// <summary>Section <c>KeyUsage</c>: how often last_used_at is written.</summary>
public sealed class KeyUsageOptions
{
    public const string SectionName = "KeyUsage";

    /// <summary>Seconds between two batched writes of last_used_at.</summary>
    public double FlushIntervalSeconds { get; set; } = 5;
}

/// <summary>
/// Collects key uses in memory (validation calls and the gateway's usage reports) so that last_used_at costs one
/// batched UPDATE every few seconds instead of a write per request. A lock, not a swapped concurrent dictionary: a use
/// still being recorded into the dictionary a flush had just taken was lost, or, landing between the flush's reads of
/// its keys and of its times, paired keys with other keys' times.
/// </summary>
public sealed class KeyUsageRecorder
{
    private readonly Lock _gate = new();
    private Dictionary<Guid, DateTime> _pending = [];

    public void Record(Guid keyId, DateTime usedAt)
    {
        lock (_gate)
        {
            if (!_pending.TryGetValue(keyId, out var existing) || usedAt > existing)
            {
                _pending[keyId] = usedAt;
            }
        }
    }

    /// <summary>Takes everything recorded so far.</summary>
    public IReadOnlyDictionary<Guid, DateTime> Drain()
    {
        lock (_gate)
        {
            var batch = _pending;
            _pending = [];
            return batch;
        }
    }

    /// <summary>Puts back a batch whose write failed, so the next flush retries it.</summary>
    public void Restore(IReadOnlyDictionary<Guid, DateTime> batch)
    {
        foreach (var (keyId, usedAt) in batch)
        {
            Record(keyId, usedAt);
        }
    }
}

/// <summary>Writes the recorded uses every <see cref="KeyUsageOptions.FlushIntervalSeconds"/>, and once more at shutdown.</summary>
public sealed class KeyUsageFlusher(
    KeyUsageRecorder recorder, KeyRepository repository, IOptions<KeyUsageOptions> options, ILogger<KeyUsageFlusher> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Max(0.1, options.Value.FlushIntervalSeconds)));
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await FlushAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        await FlushAsync(cancellationToken);
    }

    private async Task FlushAsync(CancellationToken ct)
    {
        var batch = recorder.Drain();
        if (batch.Count == 0)
        {
            return;
        }

        try
        {
            await repository.RecordUsageAsync([.. batch.Keys], [.. batch.Values], ct);
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException or OperationCanceledException)
        {
            recorder.Restore(batch);
            KeyServiceLog.UsageFlushFailed(logger, batch.Count, ex);
        }
    }
}
