using CohortBridge.ImportGateway.Auth;
using CohortBridge.ImportGateway.Data;
using CohortBridge.ImportGateway.Endpoints;
using CohortBridge.ImportGateway.Imports;
using CohortBridge.ImportGateway.OpenApi;
using CohortBridge.ImportGateway.Snapshots;
using CohortBridge.ImportGateway.Status;
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
        builder.AddPlatformBus(EndpointPrefix, x => x.AddPartnerAuthenticationConsumers());
        builder.AddPartnerAuthentication();

        var section = builder.Configuration.GetSection(GatewayOptions.SectionName);
        builder.Services.AddOptions<GatewayOptions>().Bind(section)
            .Validate(o => o.MaxIdentifiersPerRequest > 0 && o.MaxBodyBytes is > 0 and < int.MaxValue,
                "Gateway:MaxIdentifiersPerRequest and Gateway:MaxBodyBytes must be positive (MaxBodyBytes below 2 GiB).")
            .Validate(o => o.PurgeInterval > TimeSpan.Zero && o.IdempotencyRetention > TimeSpan.Zero,
                "Gateway:PurgeInterval and Gateway:IdempotencyRetention must be positive.")
            .ValidateOnStart();

        builder.Services.AddOptions<SnapshotOptions>().Bind(builder.Configuration.GetSection(SnapshotOptions.SectionName))
            .Validate(o => o.SnapshotChunkSize > 0 && o.MaxSnapshotBytes > 0 && o.SnapshotPublishesInFlight > 0
                           && o.MaxSnapshotLineBytes >= 256 && o.InvalidSampleLength > 0,
                "Gateway:SnapshotChunkSize, MaxSnapshotBytes and SnapshotPublishesInFlight must be positive, MaxSnapshotLineBytes at least 256.")
            .ValidateOnStart();
        builder.Services.AddSingleton<SnapshotImporter>();

        builder.Services.AddSingleton<GatewayMetrics>();
        builder.Services.AddSingleton<ClientRateLimiter>();
        builder.Services.AddSingleton<CohortSequenceRepository>();
        builder.Services.AddSingleton<ImportPublisher>();
        builder.Services.AddSingleton<IdempotencyRepository>();
        builder.Services.AddSingleton<ImportRegisterRepository>();
        builder.Services.AddScoped<PartnerRequestHandler>();
        builder.Services.AddHostedService<RetentionPurgeService>();

        var cohortServiceUrl = builder.Configuration["CohortService:BaseUrl"] ?? "http://localhost:5082/";
        builder.Services.AddHttpClient<CohortServiceClient>(c =>
            {
                c.BaseAddress = new Uri(cohortServiceUrl.EndsWith('/') ? cohortServiceUrl : cohortServiceUrl + "/");
            })
            .AddServiceTokenHeader()
            .AddStandardResilienceHandler(o =>
            {
                o.AttemptTimeout.Timeout = TimeSpan.FromSeconds(2);
                o.TotalRequestTimeout.Timeout = TimeSpan.FromSeconds(5);
                o.CircuitBreaker.SamplingDuration = TimeSpan.FromSeconds(10);
            });

        builder.Services.AddPartnerOpenApi(section[nameof(GatewayOptions.PublicBaseUrl)]);
        return builder;
    }

    public static WebApplication MapImportGatewayEndpoints(this WebApplication app)
    {
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapPartnerEndpoints();
        return app;
    }
}
