using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace CohortBridge.ImportGateway.Auth;

/// <summary>
/// Most requests are answered from the cache, so KeyService rarely sees a key being used: this replica collects the
/// ids of the keys it authenticated and reports them to KeyService (<c>POST /internal/import-keys/usage</c>) every
/// <see cref="KeyCacheOptions.UsageReportIntervalSeconds"/>. KeyService batches the database write as well.
/// </summary>
public sealed class KeyUsageReporter(
    IServiceProvider services, IOptions<KeyCacheOptions> options, TimeProvider time, ILogger<KeyUsageReporter> logger)
    : BackgroundService
{
    private ConcurrentDictionary<Guid, DateTimeOffset> _pending = new();

    public void Record(Guid keyId) => _pending[keyId] = time.GetUtcNow();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.Value.UsageReportIntervalSeconds), time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await ReportAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(3));
        await ReportAsync(timeout.Token);
    }

    /// <summary>Sends what was collected; on failure keeps it for the next round.</summary>
    public async Task ReportAsync(CancellationToken ct)
    {
        var batch = Interlocked.Exchange(ref _pending, new ConcurrentDictionary<Guid, DateTimeOffset>());
        if (batch.IsEmpty)
        {
            return;
        }

        try
        {
            await services.GetRequiredService<KeyServiceClient>().ReportUsageAsync(batch, ct);
        }
        catch (Exception ex) when (ex is HttpRequestException or Polly.ExecutionRejectedException or OperationCanceledException)
        {
            foreach (var (keyId, usedAt) in batch)
            {
                _pending.AddOrUpdate(keyId, usedAt, (_, existing) => existing > usedAt ? existing : usedAt);
            }

            AuthLog.UsageReportFailed(logger, batch.Count, ex);
        }
    }
}
