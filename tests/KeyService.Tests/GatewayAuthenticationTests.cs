using System.Diagnostics;
using System.Net;
using CohortBridge.ImportGateway.Auth;
using CohortBridge.Testing;

namespace CohortBridge.KeyService.Tests;

/// <summary>KeyService plus two in-process gateway replicas (their own invalidation queues) on one vhost.</summary>
public sealed class GatewayFixture : KeyServiceFixture
{
    public GatewayReplica ReplicaA { get; private set; } = null!;
    public GatewayReplica ReplicaB { get; private set; } = null!;

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        var replicas = await Task.WhenAll(
            GatewayReplica.StartAsync(Infrastructure, VirtualHost, Keys.BaseAddress),
            GatewayReplica.StartAsync(Infrastructure, VirtualHost, Keys.BaseAddress));
        (ReplicaA, ReplicaB) = (replicas[0], replicas[1]);
    }

    public override async Task DisposeAsync()
    {
        if (ReplicaA is not null)
        {
            await ReplicaA.DisposeAsync();
        }

        if (ReplicaB is not null)
        {
            await ReplicaB.DisposeAsync();
        }

        await base.DisposeAsync();
    }
}

public sealed class GatewayAuthenticationTests(GatewayFixture fx) : IClassFixture<GatewayFixture>
{
    [Fact]
    public async Task Authenticate_ValidKey_ReturnsWorkspaceAndKeyIdAndIsCached()
    {
        var t = await fx.NewTenantAsync();
        var callsBefore = fx.ReplicaA.ValidationCalls;
        for (var i = 0; i < 50; i++)
        {
            var result = await fx.ReplicaA.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret);
            Assert.Equal(PartnerAuthStatus.Authenticated, result.Status);
            Assert.Equal(t.WorkspaceId, result.WorkspaceId);
            Assert.Equal(t.Key.KeyId, result.KeyId);
        }

        Assert.Equal(1, fx.ReplicaA.ValidationCalls - callsBefore);
    }

    [Fact]
    public async Task Authenticate_WrongCredentials_ExactStatusesAndNegativeCache()
    {
        var t = await fx.NewTenantAsync();
        var otherPartner = KeyServiceFixture.NewPartner();
        var otherApiKey = await fx.RegisterPartnerAsync(otherPartner);
        var keyForOther = await fx.IssueKeyAsync(t.WorkspaceId, otherPartner);
        var r = fx.ReplicaB;

        Assert.Equal(PartnerAuthStatus.InvalidPartnerApiKey, (await r.AuthenticateAsync(t.Partner, null, t.Key.ClientSecret)).Status);
        Assert.Equal(PartnerAuthStatus.InvalidPartnerApiKey, (await r.AuthenticateAsync(t.Partner, otherApiKey, t.Key.ClientSecret)).Status);
        Assert.Equal(PartnerAuthStatus.InvalidClientSecret, (await r.AuthenticateAsync(t.Partner, t.ApiKey, null)).Status);
        Assert.Equal(PartnerAuthStatus.InvalidClientSecret, (await r.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret + "x")).Status);
        var notEnabled = await r.AuthenticateAsync(t.Partner, t.ApiKey, keyForOther.ClientSecret);
        Assert.Equal(PartnerAuthStatus.PartnerNotEnabled, notEnabled.Status);
        Assert.Null(notEnabled.WorkspaceId);

        // A flood of the same bad key costs KeyService one call.
        var bad = "cbk_AAAAAAAAAAAA_" + new string('Z', 32);
        var before = r.ValidationCalls;
        for (var i = 0; i < 50; i++)
        {
            Assert.Equal(PartnerAuthStatus.InvalidClientSecret, (await r.AuthenticateAsync(t.Partner, t.ApiKey, bad)).Status);
        }

        Assert.Equal(1, r.ValidationCalls - before);
    }

    [Fact]
    public async Task Invalidate_KeyCachedByTwoReplicas_BothRefuseWithinOneSecond()
    {
        var t = await fx.NewTenantAsync();
        var rotated = await fx.IssueKeyAsync(t.WorkspaceId, t.Partner);
        foreach (var replica in new[] { fx.ReplicaA, fx.ReplicaB })
        {
            Assert.True((await replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).IsAuthenticated);
            Assert.True((await replica.AuthenticateAsync(t.Partner, t.ApiKey, rotated.ClientSecret)).IsAuthenticated);
        }

        // Each replica has its own temporary queue (MassTransit: exclusive, non-durable, so RabbitMQ deletes it with
        // the replica's connection), so each one gets every invalidation.
        var own = (await fx.Infrastructure.QueuesAsync(fx.VirtualHost)).Where(q => q.GetProperty("name").GetString()!.StartsWith("gateway-key-invalidated-", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, own.Count);
        Assert.All(own, q => Assert.True(
            !q.GetProperty("durable").GetBoolean() && (q.GetProperty("exclusive").GetBoolean() || q.GetProperty("auto_delete").GetBoolean())));

        Assert.Equal(HttpStatusCode.NoContent, await fx.InvalidateAsync(t.WorkspaceId, t.Partner, t.Key.KeyId));
        var clock = Stopwatch.StartNew();
        await Eventually.UntilAsync(
            async () => (await fx.ReplicaA.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).Status == PartnerAuthStatus.InvalidClientSecret
                        && (await fx.ReplicaB.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).Status == PartnerAuthStatus.InvalidClientSecret,
            TimeSpan.FromSeconds(5), "both replicas refuse the invalidated key");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"took {clock.Elapsed}");

        // The other live key of the same workspace and partner keeps working (rotation without downtime).
        foreach (var replica in new[] { fx.ReplicaA, fx.ReplicaB })
        {
            var result = await replica.AuthenticateAsync(t.Partner, t.ApiKey, rotated.ClientSecret);
            Assert.Equal(PartnerAuthStatus.Authenticated, result.Status);
            Assert.Equal(rotated.KeyId, result.KeyId);
        }
    }

    [Fact]
    public async Task Authenticate_ThroughGateway_LastUsedAtReportedInBatches()
    {
        var t = await fx.NewTenantAsync();

        // The first call fills the cache through /validate; later uses are cache hits, reported by the replica.
        Assert.True((await fx.ReplicaA.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).IsAuthenticated);
        var first = await Eventually.UntilAsync(
            async () => (await fx.ListKeysAsync(t.WorkspaceId, t.Partner)).GetProperty("items")[0].GetProperty("last_used_at"),
            v => v.ValueKind == System.Text.Json.JsonValueKind.String, TimeSpan.FromSeconds(10), "last_used_at set").ContinueWith(v => v.Result.GetDateTimeOffset());

        Assert.True((await fx.ReplicaA.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).IsAuthenticated);
        await Eventually.UntilAsync(
            async () => (await fx.ListKeysAsync(t.WorkspaceId, t.Partner)).GetProperty("items")[0].GetProperty("last_used_at").GetDateTimeOffset(),
            v => v > first, TimeSpan.FromSeconds(10), "a cached use moves last_used_at forward");
    }

    [Fact]
    public async Task Logs_AfterFullKeyLifecycle_ContainNoSecret()
    {
        var t = await fx.NewTenantAsync();
        var otherPartner = KeyServiceFixture.NewPartner();
        var otherApiKey = await fx.RegisterPartnerAsync(otherPartner);
        var keyForOther = await fx.IssueKeyAsync(t.WorkspaceId, otherPartner);
        var unknown = "cbk_QQQQQQQQQQQQ_" + new string('q', 32);
        fx.Secrets.Add(unknown);
        foreach (var replica in new[] { fx.ReplicaA, fx.ReplicaB })
        {
            await replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret);
            await replica.AuthenticateAsync(t.Partner, otherApiKey, t.Key.ClientSecret);
            await replica.AuthenticateAsync(t.Partner, t.ApiKey, keyForOther.ClientSecret);
            await replica.AuthenticateAsync(t.Partner, t.ApiKey, unknown);
        }

        Assert.Equal(HttpStatusCode.NoContent, await fx.InvalidateAsync(t.WorkspaceId, t.Partner, t.Key.KeyId));
        await Eventually.UntilAsync(
            async () => (await fx.ReplicaA.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).Status == PartnerAuthStatus.InvalidClientSecret,
            TimeSpan.FromSeconds(5), "invalidated");
        await Eventually.UntilAsync(
            () => Task.FromResult(fx.ReplicaB.Logs.Contains(t.Key.KeyId.ToString(), StringComparison.Ordinal)
                                  && fx.Keys.Output.Contains(t.Key.KeyId.ToString(), StringComparison.Ordinal)),
            TimeSpan.FromSeconds(10), "the eviction and the invalidation are logged (by key id)");

        var logs = new Dictionary<string, string>
        {
            ["KeyService"] = fx.Keys.Output,
            ["replica A"] = fx.ReplicaA.Logs,
            ["replica B"] = fx.ReplicaB.Logs,
        };
        Assert.Contains("Key invalidation endpoint", fx.ReplicaA.Logs, StringComparison.Ordinal);
        Assert.All(logs, l => Assert.True(l.Value.Length > 1000, $"{l.Key} captured hardly any log ({l.Value.Length} chars)"));
        foreach (var secret in fx.Secrets)
        {
            var randomPart = secret.Split('_')[^1];
            foreach (var (source, text) in logs)
            {
                Assert.False(text.Contains(secret, StringComparison.Ordinal), $"{source} logged a secret");
                Assert.False(text.Contains(randomPart, StringComparison.Ordinal), $"{source} logged the random part of a secret");
            }
        }
    }
}
