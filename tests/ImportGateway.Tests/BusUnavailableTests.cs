using System.Net;
using CohortBridge.Testing;
using static CohortBridge.ImportGateway.Tests.PartnerHttp;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>A gateway whose broker cannot be reached: a valid request gets 503 with Retry-After, never a 500 or a 202.</summary>
[Collection(GatewayCollection.Name)]
public sealed class BusUnavailableTests(GatewayFixture fx)
{
    [Fact]
    public async Task Post_BrokerUnreachable_Returns503WithRetryAfter()
    {
        // A closed port stands for a stopped broker (the shared broker cannot be stopped under other helpers' tests).
        await using var gateway = await StartLiveAsync(new Dictionary<string, string>
        {
            ["RabbitMq__Port"] = ServiceProcess.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Gateway__PublishTimeout"] = "00:00:03",
            ["Gateway__PublishAttemptTimeout"] = "00:00:01",
        });

        var changes = await PostAsync(gateway.Client, ChangesPath, ChangesBody(fx.PartnerApiKey, fx.ClientSecret, """[{"user_ids": ["x"]}]""", "bus-down"));
        var name = await PostAsync(gateway.Client, NamePath, NameBody(fx.PartnerApiKey, fx.ClientSecret, "bus-down"), idempotencyKey: "bus-down-key");

        foreach (var reply in new[] { changes, name })
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, reply.Status);
            Assert.Equal("service temporarily unavailable", reply.Message);
            Assert.NotNull(reply.RetryAfter);
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await gateway.Client.GetAsync("health/ready")).StatusCode);
        Assert.False(gateway.HasExited);
        Assert.DoesNotContain(fx.Published.Values.SelectMany(v => v), m => m.Message.CohortId == "bus-down");
    }

    [Fact]
    public async Task Post_KeyServiceUnreachable_Returns503WithRetryAfter()
    {
        await using var gateway = await StartLiveAsync(new Dictionary<string, string>
        {
            ["KeyService__BaseUrl"] = $"http://127.0.0.1:{ServiceProcess.FreePort()}/",
        });

        var reply = await PostAsync(gateway.Client, ChangesPath, ChangesBody(fx.PartnerApiKey, fx.ClientSecret, "[]", "keys-down"));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, reply.Status);
        Assert.Equal("service temporarily unavailable", reply.Message);
        Assert.NotNull(reply.RetryAfter);
    }

    private Task<ServiceProcess> StartLiveAsync(Dictionary<string, string> overrides) => SnapshotHttp.StartLiveGatewayAsync(fx, overrides);
}
