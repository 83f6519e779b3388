using CohortBridge.ServiceDefaults;

namespace CohortBridge.SegmentService;

public static class SegmentServiceHosting
{
    public const string DatabaseName = "Segments";
    public const string MeterName = "CohortBridge.SegmentService";
    public const string EndpointPrefix = "segments";

    public static IHostApplicationBuilder AddSegmentService(this IHostApplicationBuilder builder)
    {
        builder.AddPlatformDatabase(DatabaseName, typeof(SegmentServiceHosting).Assembly);
        builder.AddPlatformBus(EndpointPrefix);
        return builder;
    }

    public static WebApplication MapSegmentServiceEndpoints(this WebApplication app)
    {
        return app;
    }
}
