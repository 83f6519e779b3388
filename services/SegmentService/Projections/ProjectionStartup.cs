using CohortBridge.SegmentService.Data;
using MassTransit;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace CohortBridge.SegmentService.Projections;

/// <summary>
/// Start-up of the projection: load the persisted copy from the database, let the consumers run, then catch up with
/// CohortService (versions behind, directories never read) and report ready.
/// </summary>
/// <remarks>
/// If CohortService does not answer within <see cref="SegmentsOptions.StartupCatchUpTimeoutSeconds"/>, the replica
/// reports ready with its persisted projection (logging a warning) rather than staying out of the load balancer
/// because of another service's outage; it keeps retrying the catch-up in the background, and the
/// <c>versions_behind</c> gauge shows what it is missing. Events keep flowing meanwhile: a gap found by a consumer
/// retries (then lands in the error queue) only while CohortService is down.
/// </remarks>
public sealed partial class ProjectionStartup(
    ProjectionStore store,
    ProjectionRepository repository,
    ProjectionUpdater updater,
    CohortServiceClient cohortService,
    IBusControl bus,
    IOptions<SegmentsOptions> options,
    ILogger<ProjectionStartup> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await LoadPersistedAsync(stoppingToken);
        store.MarkLoaded();

        if (!cohortService.IsConfigured)
        {
            LogNoCohortService();
            store.MarkReady();
            return;
        }

        var catchUp = CatchUpUntilDoneAsync(stoppingToken);
        var timeout = Task.Delay(TimeSpan.FromSeconds(options.Value.StartupCatchUpTimeoutSeconds), stoppingToken);
        if (await Task.WhenAny(catchUp, timeout) != catchUp)
        {
            LogReadyWithoutCatchUp(options.Value.StartupCatchUpTimeoutSeconds);
        }

        store.MarkReady();
        while (!await catchUp)
        {
            // The listing ran before this replica's queues were bound to the exchanges: a workspace created meanwhile
            // may have sent its directory events nowhere, and one created later cannot be marked complete. Once the
            // bus is up, list again: that catch-up reads such a workspace and marks the later ones.
            LogCatchUpBeforeQueuesBound();
            await bus.WaitForHealthStatus(BusHealthStatus.Healthy, stoppingToken);
            catchUp = CatchUpUntilDoneAsync(stoppingToken);
        }
    }

    private async Task LoadPersistedAsync(CancellationToken ct)
    {
        while (true)
        {
            try
            {
                var cohorts = 0;
                await foreach (var (workspaceId, cohort) in repository.LoadCohortsAsync(ct))
                {
                    store.GetOrAdd(workspaceId).Publish(cohort);
                    cohorts++;
                }

                var users = 0;
                string? currentWorkspace = null;
                var batch = new List<VersionedUser>();
                await foreach (var (workspaceId, user) in repository.LoadDirectoryAsync(ct))
                {
                    if (workspaceId != currentWorkspace || batch.Count == 100_000)
                    {
                        Flush(currentWorkspace, batch);
                        currentWorkspace = workspaceId;
                    }

                    batch.Add(user);
                    users += user.User.Deleted ? 0 : 1;
                }

                Flush(currentWorkspace, batch);
                LogLoaded(cohorts, users);
                return;
            }
            catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException)
            {
                LogLoadFailed(ex);
                await Task.Delay(TimeSpan.FromSeconds(options.Value.CatchUpRetrySeconds), ct);
            }
        }
    }

    private void Flush(string? workspaceId, List<VersionedUser> batch)
    {
        if (workspaceId is not null && batch.Count > 0)
        {
            store.GetOrAdd(workspaceId).Directory.Apply(batch);
        }

        batch.Clear();
    }

    /// <summary>Catches up, retrying until a pass succeeds; returns whether this replica's queues were bound before it.</summary>
    private async Task<bool> CatchUpUntilDoneAsync(CancellationToken ct)
    {
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            try
            {
                var queuesBound = await CatchUpOnceAsync(ct);
                LogCaughtUp();
                return queuesBound;
            }
            catch (Exception ex) when (ex is HttpRequestException or TimeoutException or InvalidDataException
                                           // A stream cut mid-read (CohortService restarting while it sends a directory).
                                           or IOException
                                           or System.Text.Json.JsonException
                                           // An open circuit or a resilience timeout while CohortService is down: retry, not stop the host.
                                           or Polly.ExecutionRejectedException
                                           || (ex is TaskCanceledException && !ct.IsCancellationRequested))
            {
                LogCatchUpFailed(ex);
                await Task.Delay(TimeSpan.FromSeconds(options.Value.CatchUpRetrySeconds), ct);
            }
        }
    }

    private async Task<bool> CatchUpOnceAsync(CancellationToken ct)
    {
        // Workspaces created after the listing below are complete from events only if the queues were bound before it.
        var queuesBound = await bus.WaitForHealthStatus(BusHealthStatus.Healthy, TimeSpan.FromSeconds(10)) == BusHealthStatus.Healthy;
        var loaded = await repository.LoadedDirectoryWorkspacesAsync(ct);
        foreach (var workspaceId in await cohortService.ListWorkspacesAsync(ct))
        {
            if (!loaded.Contains(workspaceId))
            {
                await updater.LoadDirectoryAsync(workspaceId, ct);
            }
        }

        await foreach (var summary in cohortService.ListCohortsAsync(ct))
        {
            await updater.CatchUpAsync(summary, ct);
        }

        if (queuesBound)
        {
            await updater.DirectoriesCompleteAsync(ct);
        }

        return queuesBound;
    }

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "Loaded the persisted projection: {CohortCount} cohorts, {UserCount} users")]
    private partial void LogLoaded(int cohortCount, int userCount);

    [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "Loading the persisted projection failed; retrying")]
    private partial void LogLoadFailed(Exception exception);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "Projection caught up with CohortService")]
    private partial void LogCaughtUp();

    [LoggerMessage(EventId = 203, Level = LogLevel.Warning, Message = "Catching up with CohortService failed; retrying")]
    private partial void LogCatchUpFailed(Exception exception);

    [LoggerMessage(EventId = 204, Level = LogLevel.Warning,
        Message = "CohortService did not answer within {Seconds} s: ready with the persisted projection, still catching up in the background")]
    private partial void LogReadyWithoutCatchUp(int seconds);

    [LoggerMessage(EventId = 205, Level = LogLevel.Warning,
        Message = "CohortService:BaseUrl is not configured: the projection is fed by events only (no catch-up, no gap reads)")]
    private partial void LogNoCohortService();

    [LoggerMessage(EventId = 206, Level = LogLevel.Warning,
        Message = "Caught up before the bus was connected: catching up again once it is, so that workspaces created meanwhile are read")]
    private partial void LogCatchUpBeforeQueuesBound();
}

/// <summary>Unhealthy (so /health/ready is 503) until the projection is loaded and caught up.</summary>
public sealed class ProjectionHealthCheck(ProjectionStore store) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken) =>
        Task.FromResult(store.IsReady
            ? HealthCheckResult.Healthy()
            : HealthCheckResult.Unhealthy(store.IsLoaded ? "Catching up with CohortService." : "Loading the persisted projection."));
}
