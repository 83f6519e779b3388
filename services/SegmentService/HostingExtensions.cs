using CohortBridge.SegmentService.Consumers;
using CohortBridge.SegmentService.Data;
using CohortBridge.SegmentService.Endpoints;
using CohortBridge.SegmentService.Projections;
using CohortBridge.SegmentService.Segments;
using CohortBridge.ServiceDefaults;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace CohortBridge.SegmentService;

public static class SegmentServiceHosting
{
    public const string DatabaseName = "Segments";
    public const string MeterName = "CohortBridge.SegmentService";
    public const string EndpointPrefix = "segments";

    public static IHostApplicationBuilder AddSegmentService(this IHostApplicationBuilder builder)
    {
        builder.AddPlatformDatabase(DatabaseName, typeof(SegmentServiceHosting).Assembly);

        var section = builder.Configuration.GetSection(SegmentsOptions.SectionName);
        builder.Services.Configure<SegmentsOptions>(section);
        var options = section.Get<SegmentsOptions>() ?? new SegmentsOptions();
        var suffix = options.QueueSuffix();

        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<ProjectionStore>();
        builder.Services.AddSingleton<SegmentMetrics>();
        builder.Services.AddSingleton<ProjectionRepository>();
        builder.Services.AddSingleton<SegmentRepository>();
        builder.Services.AddSingleton<ProjectionUpdater>();
        builder.Services.AddSingleton<AudienceQueries>();
        builder.Services.AddSingleton<SegmentLookup>();

        var baseUrl = builder.Configuration["CohortService:BaseUrl"];
        builder.Services.AddSingleton<CohortServiceClient>();
        builder.Services.AddHttpClient(CohortServiceClient.HttpClientName, http =>
            {
                if (!string.IsNullOrWhiteSpace(baseUrl))
                {
                    http.BaseAddress = new Uri(baseUrl.EndsWith('/') ? baseUrl : baseUrl + "/");
                }

                // Whole-cohort reads of millions of members take a while; the resilience handler bounds each try.
                http.Timeout = Timeout.InfiniteTimeSpan;
            })
            .AddServiceTokenHeader()
            .AddStandardResilienceHandler(o =>
            {
                o.Retry.Delay = TimeSpan.FromMilliseconds(500);
                o.AttemptTimeout.Timeout = TimeSpan.FromMinutes(2);
                o.TotalRequestTimeout.Timeout = TimeSpan.FromMinutes(5);
                o.CircuitBreaker.SamplingDuration = TimeSpan.FromMinutes(5);
            });
        builder.Services.AddHostedService<ProjectionStartup>();
        builder.Services.AddHealthChecks().Add(new HealthCheckRegistration(
            "projection",
            sp => new ProjectionHealthCheck(sp.GetRequiredService<ProjectionStore>()),
            HealthStatus.Unhealthy,
            [ServiceDefaultsExtensions.ReadyTag]));

        // Every replica keeps its own projection, so each has its own queues (named by Segments:InstanceId).
        builder.AddPlatformBus(EndpointPrefix, x =>
        {
            x.AddConsumer<CohortUpdatedConsumer>().Endpoint(e =>
            {
                e.Name = $"{EndpointPrefix}-cohort-updated-{suffix}";
                e.ConcurrentMessageLimit = 8;
            });
            x.AddConsumer<UserDirectoryChangedConsumer>().Endpoint(e =>
            {
                e.Name = $"{EndpointPrefix}-user-directory-changed-{suffix}";

                // Entries carry full identities: applying them in queue order keeps the latest.
                e.ConcurrentMessageLimit = 1;
            });
        });
        return builder;
    }

    public static WebApplication MapSegmentServiceEndpoints(this WebApplication app)
    {
        app.MapSegmentEndpoints();
        app.MapAudienceEndpoints();
        return app;
    }
}
