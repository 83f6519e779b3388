using CohortBridge.ServiceDefaults;

namespace CohortBridge.ImportGateway;

public static class ImportGatewayHosting
{
    public const string DatabaseName = "Gateway";
    public const string MeterName = "CohortBridge.ImportGateway";
    public const string EndpointPrefix = "gateway";

    public static IHostApplicationBuilder AddImportGateway(this IHostApplicationBuilder builder)
    {
        builder.AddPlatformDatabase(DatabaseName, typeof(ImportGatewayHosting).Assembly);
        builder.AddPlatformBus(EndpointPrefix);
        return builder;
    }

    public static WebApplication MapImportGatewayEndpoints(this WebApplication app)
    {
        return app;
    }
}
