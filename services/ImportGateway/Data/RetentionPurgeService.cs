using CohortBridge.ServiceDefaults;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.ImportGateway.Data;

/// <summary>
/// Deletes idempotency records past <see cref="GatewayOptions.IdempotencyRetention"/> and accepted imports past
/// <see cref="GatewayOptions.ImportRetention"/>, every <see cref="GatewayOptions.PurgeInterval"/>. Each table is purged
/// batch after batch until a batch comes up short: one batch per interval (10,000 every 5 minutes) fell behind a partner
/// at the compatible API's published limit (250,000 requests an hour).
/// </summary>
public sealed partial class RetentionPurgeService(
    IdempotencyRepository idempotency, ImportRegisterRepository register, IOptions<GatewayOptions> options,
    ILogger<RetentionPurgeService> logger) : BackgroundService
{
    private const int BatchSize = 10_000;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.PurgeInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                var (records, imports) = await PurgeOnceAsync(stoppingToken);
                if (records + imports > 0)
                {
                    Purged(logger, records, imports);
                }
            }
            catch (NpgsqlException ex)
            {
                PurgeFailed(logger, ex.GetType().Name);
            }
        }
    }

    /// <summary>Deletes everything past the retentions; returns the idempotency records and accepted imports deleted.</summary>
    public async Task<(int IdempotencyRecords, int AcceptedImports)> PurgeOnceAsync(CancellationToken ct)
    {
        var records = await Batches.DrainAsync(BatchSize, b => idempotency.PurgeAsync(options.Value.IdempotencyRetention, b, ct));
        var imports = options.Value.ImportRetention > TimeSpan.Zero
            ? await Batches.DrainAsync(BatchSize, b => register.PurgeAsync(options.Value.ImportRetention, b, ct))
            : 0;
        return (records, imports);
    }

    [LoggerMessage(EventId = 30, Level = LogLevel.Information, Message = "Purged {Records} expired idempotency records and {Imports} expired accepted imports")]
    private static partial void Purged(ILogger logger, int records, int imports);

    [LoggerMessage(EventId = 31, Level = LogLevel.Warning, Message = "Purging expired idempotency records and accepted imports failed ({Error})")]
    private static partial void PurgeFailed(ILogger logger, string error);
}
