using CohortBridge.CohortService;
using CohortBridge.ServiceDefaults;

var builder = WebApplication.CreateBuilder(args);
if (Database.RunMigrationsCommand(args, builder.Configuration, CohortServiceHosting.DatabaseName, typeof(CohortServiceHosting).Assembly))
{
    return;
}

builder.AddServiceDefaults("CohortService", 5082, CohortServiceHosting.MeterName);
builder.AddCohortService();

var app = builder.Build();
app.EnsurePlatformTokensConfigured(adminApis: true);
app.MapDefaultEndpoints();
app.MapCohortServiceEndpoints();
app.Run();

/// <summary>Entry point; public for test hosts.</summary>
public partial class Program;
