using CohortBridge.ImportGateway;
using CohortBridge.ServiceDefaults;

var builder = WebApplication.CreateBuilder(args);
if (Database.RunMigrationsCommand(args, builder.Configuration, ImportGatewayHosting.DatabaseName, typeof(ImportGatewayHosting).Assembly))
{
    return;
}

builder.AddServiceDefaults("ImportGateway", 5080, ImportGatewayHosting.MeterName);
builder.AddImportGateway();

var app = builder.Build();
app.EnsurePlatformTokensConfigured(adminApis: false);
app.MapDefaultEndpoints();
app.MapImportGatewayEndpoints();
app.Run();

/// <summary>Entry point; public for test hosts.</summary>
public partial class Program;
