using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Builder;

namespace CohortBridge.KeyService.Tests;

/// <summary>Management:Port settings a service must refuse at start (the split itself is tested on a gateway process).</summary>
public sealed class ManagementPortTests
{
    [Theory]
    [InlineData(null, "5081")]
    [InlineData("http://0.0.0.0:7000;http://+:7001", "7001")]
    public void ManagementPort_AlsoAServiceUrl_RefusesToStart(string? urls, string port)
    {
        var builder = WebApplication.CreateBuilder();
        builder.Configuration["urls"] = urls;
        builder.Configuration["Management:Port"] = port;

        var refused = Assert.Throws<InvalidOperationException>(() => builder.AddServiceDefaults("KeyService", 5081));
        Assert.Contains($"Management:Port {port} is also a service URL", refused.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("nine")]
    [InlineData("70000")]
    public void ManagementPort_NotAPort_RefusesToStart(string port)
    {
        var builder = WebApplication.CreateBuilder();
        builder.Configuration["Management:Port"] = port;

        var refused = Assert.Throws<InvalidOperationException>(() => builder.AddServiceDefaults("KeyService", 5081));
        Assert.Contains("Management:Port must be a TCP port number", refused.Message, StringComparison.Ordinal);
    }
}
