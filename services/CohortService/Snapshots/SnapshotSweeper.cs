using System.Globalization;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Snapshots;

/// <summary>
/// Fails snapshots that made no progress for <see cref="SnapshotOptions.SnapshotTimeoutMinutes"/> (the stream broke
/// and no abort marker arrived, or chunks were lost) and removes their staging; also cleans up after snapshots whose
/// import failed another way. Several replicas may sweep at once: failing takes the snapshot's row lock.
/// </summary>
public sealed partial class SnapshotSweeper(
    NpgsqlDataSource dataSource, SnapshotChunkProcessor processor, IOptions<SnapshotOptions> options, ILogger<SnapshotSweeper> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        using var timer = new PeriodicTimer(o.SweepInterval);
        do
        {
            try
            {
                await SweepOnceAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.SweepFailed(logger, ex);
            }
        }
        while (await timer.NextTickAsync(stoppingToken));
    }

    /// <summary>Fails every stale snapshot; returns how many.</summary>
    public async Task<int> SweepOnceAsync(CancellationToken ct)
    {
        var timeout = options.Value.Timeout;
        var failed = 0;
        foreach (var s in await SnapshotRepository.StaleAsync(dataSource, timeout, ct))
        {
            var error = string.Create(CultureInfo.InvariantCulture,
                $"the snapshot was incomplete after {timeout.TotalMinutes:0.##} minutes without progress: {s.ChunksStaged} of {(s.ChunkCount is { } n ? n.ToString(CultureInfo.InvariantCulture) : "an unknown number of")} chunks arrived");
            if (await processor.FailAsync(s.ImportId, error, ct))
            {
                failed++;
            }
        }

        return failed;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 410, Level = LogLevel.Warning, Message = "Snapshot sweep failed; retrying at the next interval")]
        public static partial void SweepFailed(ILogger logger, Exception ex);
    }
}
