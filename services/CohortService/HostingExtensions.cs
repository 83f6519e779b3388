using CohortBridge.ServiceDefaults;

namespace CohortBridge.CohortService;

public static class CohortServiceHosting
{
    public const string DatabaseName = "Cohorts";
    public const string MeterName = "CohortBridge.CohortService";
    public const string EndpointPrefix = "cohorts";

    public static IHostApplicationBuilder AddCohortService(this IHostApplicationBuilder builder)
    {
        builder.AddPlatformDatabase(DatabaseName, typeof(CohortServiceHosting).Assembly);
        builder.AddPlatformBus(EndpointPrefix);
        return builder;
    }

    public static WebApplication MapCohortServiceEndpoints(this WebApplication app)
    {
        return app;
    }
}
