using CohortBridge.ServiceDefaults;

namespace CohortBridge.KeyService;

public static class KeyServiceHosting
{
    public const string DatabaseName = "Keys";
    public const string MeterName = "CohortBridge.KeyService";
    public const string EndpointPrefix = "keys";

    public static IHostApplicationBuilder AddKeyService(this IHostApplicationBuilder builder)
    {
        builder.AddPlatformDatabase(DatabaseName, typeof(KeyServiceHosting).Assembly);
        builder.AddPlatformBus(EndpointPrefix);
        return builder;
    }

    public static WebApplication MapKeyServiceEndpoints(this WebApplication app)
    {
        return app;
    }
}
