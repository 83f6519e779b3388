using CohortBridge.ServiceDefaults;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace CohortBridge.KeyService.Tests;

/// <summary>Readiness checks are logged when their status changes, not on every probe.</summary>
public sealed class HealthTransitionLoggerTests
{
    [Fact]
    public async Task Publish_RepeatedReports_LogOnlyTheChanges()
    {
        var logger = new ListLogger();
        var publisher = new HealthTransitionLogger(logger);

        foreach (var (database, bus) in new[]
                 {
                     (HealthStatus.Healthy, HealthStatus.Unhealthy), // start: the broker is not up yet
                     (HealthStatus.Healthy, HealthStatus.Unhealthy),
                     (HealthStatus.Healthy, HealthStatus.Healthy),
                     (HealthStatus.Healthy, HealthStatus.Healthy),
                     (HealthStatus.Unhealthy, HealthStatus.Healthy),
                     (HealthStatus.Unhealthy, HealthStatus.Healthy),
                     (HealthStatus.Degraded, HealthStatus.Healthy),
                     (HealthStatus.Healthy, HealthStatus.Healthy),
                 })
        {
            await publisher.PublishAsync(Report(("database", database, null), ("bus", bus, "not connected")), CancellationToken.None);
        }

        Assert.Equal(
        [
            (LogLevel.Warning, "Health check bus is Unhealthy: not connected"),
            (LogLevel.Information, "Health check bus is healthy again (was Unhealthy)"),
            (LogLevel.Warning, "Health check database is Unhealthy: connection refused"),
            (LogLevel.Warning, "Health check database is Degraded: connection refused"),
            (LogLevel.Information, "Health check database is healthy again (was Degraded)"),
        ], logger.Lines);
    }

    private static HealthReport Report(params (string Name, HealthStatus Status, string? Description)[] entries) =>
        new(entries.ToDictionary(
            e => e.Name,
            e => new HealthReportEntry(e.Status, e.Description, TimeSpan.Zero,
                e.Status == HealthStatus.Healthy || e.Description is not null ? null : new InvalidOperationException("connection refused"), null)),
            TimeSpan.Zero);

    private sealed class ListLogger : ILogger<HealthTransitionLogger>
    {
        public List<(LogLevel, string)> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add((logLevel, formatter(state, exception)));
    }
}
