using CohortBridge.KeyService;
using CohortBridge.ServiceDefaults;

var builder = WebApplication.CreateBuilder(args);
if (Database.RunMigrationsCommand(args, builder.Configuration, KeyServiceHosting.DatabaseName, typeof(KeyServiceHosting).Assembly))
{
    return;
}

builder.AddServiceDefaults("KeyService", 5081, KeyServiceHosting.MeterName);
builder.AddKeyService();

var app = builder.Build();
app.EnsurePlatformTokensConfigured(adminApis: true);
app.MapDefaultEndpoints();
app.MapKeyServiceEndpoints();
app.Run();

/// <summary>Entry point; public for test hosts.</summary>
public partial class Program;
