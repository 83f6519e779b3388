using System.Net;
using CohortBridge.Testing;

namespace CohortBridge.EndToEnd.Tests;

public sealed class OperationsTests(PlatformFixture platform) : IClassFixture<PlatformFixture>
{
    public static TheoryData<string> Services => new() { "KeyService", "ImportGateway", "CohortService", "SegmentService" };

    private ServiceProcess Service(string name) => name switch
    {
        "KeyService" => platform.Keys,
        "ImportGateway" => platform.Gateway,
        "CohortService" => platform.Cohorts,
        _ => platform.Segments,
    };

    [Theory]
    [MemberData(nameof(Services))]
    public async Task Health_EveryService_LiveAndReady(string name)
    {
        var client = Service(name).Client;
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("health/ready")).StatusCode);
    }

    [Theory]
    [MemberData(nameof(Services))]
    public async Task Metrics_EveryService_PrometheusTextWithServiceName(string name)
    {
        var body = await Service(name).Client.GetStringAsync("metrics");
        Assert.Contains("# TYPE", body, StringComparison.Ordinal);
        Assert.Contains($"service_name=\"{name}\"", body, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Services))]
    public async Task RequestId_SentByClient_IsEchoed(string name)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "health/live");
        request.Headers.Add("X-Request-Id", "req-12345");
        using var response = await Service(name).Client.SendAsync(request);
        Assert.Equal("req-12345", Assert.Single(response.Headers.GetValues("X-Request-Id")));
    }

    [Fact]
    public async Task RequestId_NotSent_IsGenerated()
    {
        using var response = await platform.Keys.Client.GetAsync("health/live");
        Assert.False(string.IsNullOrWhiteSpace(Assert.Single(response.Headers.GetValues("X-Request-Id"))));
    }
}
