using CohortBridge.KeyService.Data;
using CohortBridge.KeyService.Endpoints;
using CohortBridge.KeyService.Keys;
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

        // KeyService only publishes (DataImportKeyIssued, DataImportKeyInvalidated); it consumes nothing.
        builder.AddPlatformBus(EndpointPrefix);

        builder.Services.Configure<GatewayOptions>(builder.Configuration.GetSection(GatewayOptions.SectionName));
        builder.Services.Configure<KeyUsageOptions>(builder.Configuration.GetSection(KeyUsageOptions.SectionName));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<KeyRepository>();
        builder.Services.AddSingleton<KeyValidator>();
        builder.Services.AddSingleton<KeyUsageRecorder>();
        builder.Services.AddHostedService<KeyUsageFlusher>();
        return builder;
    }

    public static WebApplication MapKeyServiceEndpoints(this WebApplication app)
    {
        app.MapPartnerEndpoints();
        app.MapWorkspaceEndpoints();
        app.MapImportKeyEndpoints();
        app.MapInternalKeyEndpoints();
        return app;
    }
}
