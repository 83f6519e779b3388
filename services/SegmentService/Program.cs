using CohortBridge.SegmentService;
using CohortBridge.ServiceDefaults;

var builder = WebApplication.CreateBuilder(args);
if (Database.RunMigrationsCommand(args, builder.Configuration, SegmentServiceHosting.DatabaseName, typeof(SegmentServiceHosting).Assembly))
{
    return;
}

builder.AddServiceDefaults("SegmentService", 5083, SegmentServiceHosting.MeterName);
builder.AddSegmentService();

var app = builder.Build();
app.EnsurePlatformTokensConfigured(adminApis: true);
app.MapDefaultEndpoints();
app.MapSegmentServiceEndpoints();
app.Run();

/// <summary>Entry point; public for test hosts.</summary>
public partial class Program;
