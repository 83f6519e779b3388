using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace CohortBridge.ServiceDefaults;

/// <summary>
/// Logs each readiness check when its status changes, instead of on every probe: the framework's own logger wrote an
/// error line per failing check per probe, so a start-up (SegmentService loads its projections for a minute while
/// <c>make up</c> probes every half second) or a short broker outage wrote hundreds of <c>fail</c> lines that said the
/// same thing. A check that turns unhealthy (or degraded) is one warning with its reason; its recovery is one line.
/// </summary>
public sealed partial class HealthTransitionLogger(ILogger<HealthTransitionLogger> logger) : IHealthCheckPublisher
{
    private readonly Dictionary<string, HealthStatus> _last = new(StringComparer.Ordinal);

    public Task PublishAsync(HealthReport report, CancellationToken cancellationToken)
    {
        lock (_last)
        {
            foreach (var (name, entry) in report.Entries)
            {
                var known = _last.TryGetValue(name, out var last);
                _last[name] = entry.Status;
                if (entry.Status == HealthStatus.Healthy)
                {
                    if (known && last != HealthStatus.Healthy)
                    {
                        Recovered(logger, name, last);
                    }
                }
                else if (!known || last != entry.Status)
                {
                    NotHealthy(logger, name, entry.Status, entry.Description ?? entry.Exception?.Message ?? "no reason given", entry.Exception);
                }
            }
        }

        return Task.CompletedTask;
    }

    [LoggerMessage(EventId = 900, Level = LogLevel.Warning, Message = "Health check {Check} is {Status}: {Reason}")]
    private static partial void NotHealthy(ILogger logger, string check, HealthStatus status, string reason, Exception? exception);

    [LoggerMessage(EventId = 901, Level = LogLevel.Information, Message = "Health check {Check} is healthy again (was {Status})")]
    private static partial void Recovered(ILogger logger, string check, HealthStatus status);
}
