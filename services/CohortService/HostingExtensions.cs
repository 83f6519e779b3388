using CohortBridge.CohortService.Consumers;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Directory;
using CohortBridge.CohortService.Endpoints;
using CohortBridge.CohortService.Imports;
using CohortBridge.CohortService.Outbox;
using CohortBridge.CohortService.Snapshots;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.CohortService;

public static class CohortServiceHosting
{
    public const string DatabaseName = "Cohorts";
    public const string MeterName = "CohortBridge.CohortService";
    public const string EndpointPrefix = "cohorts";

    public static IHostApplicationBuilder AddCohortService(this IHostApplicationBuilder builder)
    {
        DateTimeOffsetHandler.Register();
        builder.Services.AddOptions<CohortsOptions>()
            .Bind(builder.Configuration.GetSection(CohortsOptions.SectionName))
            .Validate(o => o.InlineChangeLimit >= 0 && o.ChangeLogSetLimit >= 0,
                "Cohorts:InlineChangeLimit and Cohorts:ChangeLogSetLimit must not be negative.")
            .Validate(o => o.ReplaySweepInterval > TimeSpan.Zero, "Cohorts:ReplaySweepInterval must be positive.")
            // The import sweep deletes only change-log entries whose sets the replay sweep has already cleared.
            .Validate(o => o.ImportRetention <= TimeSpan.Zero || (o.ReplayRetention > TimeSpan.Zero && o.ReplayRetention <= o.ImportRetention),
                "Cohorts:ImportRetention must be 0 (keep everything) or at least Cohorts:ReplayRetention, which must then be more than 0.")
            .ValidateOnStart();
        builder.AddPlatformDatabase(DatabaseName, typeof(CohortServiceHosting).Assembly);

        builder.Services.AddSingleton<IImportHandler, NameImportHandler>();
        builder.Services.AddSingleton<IImportHandler, ChangesImportHandler>();
        builder.Services.AddSingleton<IImportHandler, ArchiveImportHandler>();
        builder.Services.AddSingleton<SequenceGate>();
        builder.Services.AddSingleton<CohortLanes>();
        builder.Services.AddSingleton<Matching.MatchingSlots>();
        builder.Services.AddSingleton<ImportProcessor>();
        builder.Services.AddSingleton<OutboxSignal>();
        builder.Services.AddSingleton<UserDirectory>();
        builder.Services.AddHostedService<OutboxDispatcher>();
        builder.Services.AddOptions<SnapshotOptions>().Bind(builder.Configuration.GetSection(SnapshotOptions.SectionName))
            .Validate(o => o.SnapshotTimeoutMinutes > 0 && o.SnapshotSweepIntervalSeconds > 0,
                "Cohorts:SnapshotTimeoutMinutes and Cohorts:SnapshotSweepIntervalSeconds must be positive.")
            .ValidateOnStart();
        builder.Services.AddSingleton<SnapshotChunkProcessor>();
        builder.Services.AddHostedService<SnapshotSweeper>();
        builder.Services.AddHostedService<ReplayHistorySweeper>();

        builder.AddPlatformBus(EndpointPrefix, x =>
        {
            x.AddConsumer<CohortExportReceivedConsumer>(typeof(CohortExportReceivedConsumerDefinition));
            x.AddConsumer<UserProfilesChangedConsumer>();
        });
        return builder;
    }

    public static WebApplication MapCohortServiceEndpoints(this WebApplication app)
    {
        app.MapDirectoryEndpoints();
        app.MapCohortEndpoints();
        app.MapInternalEndpoints();
        return app;
    }
}
