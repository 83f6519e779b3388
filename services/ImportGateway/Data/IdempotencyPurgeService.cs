using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.ImportGateway.Data;

/// <summary>Deletes idempotency records past their retention, in bounded batches, every few minutes.</summary>
public sealed partial class IdempotencyPurgeService(
    IdempotencyRepository repository, IOptions<GatewayOptions> options, ILogger<IdempotencyPurgeService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMinutes(5));
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                var deleted = await repository.PurgeAsync(options.Value.IdempotencyRetention, stoppingToken);
                if (deleted > 0)
                {
                    Purged(logger, deleted);
                }
            }
            catch (NpgsqlException ex)
            {
                PurgeFailed(logger, ex.GetType().Name);
            }
        }
    }

    [LoggerMessage(EventId = 30, Level = LogLevel.Information, Message = "Purged {Count} expired idempotency records")]
    private static partial void Purged(ILogger logger, int count);

    [LoggerMessage(EventId = 31, Level = LogLevel.Warning, Message = "Purging idempotency records failed ({Error})")]
    private static partial void PurgeFailed(ILogger logger, string error);
}
