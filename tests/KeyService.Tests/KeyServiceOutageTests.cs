using CohortBridge.ImportGateway.Auth;
using Dapper;
using Npgsql;

namespace CohortBridge.KeyService.Tests;

/// <summary>Its own KeyService process per test (one test stops it) and one replica whose clock the test moves.</summary>
public sealed class KeyServiceOutageTests : IAsyncLifetime
{
    private readonly KeyServiceFixture _keys = new();
    private readonly AdjustableClock _clock = new();
    private GatewayReplica _replica = null!;

    public async Task InitializeAsync()
    {
        await _keys.InitializeAsync();
        _replica = await GatewayReplica.StartAsync(_keys.Infrastructure, _keys.VirtualHost, _keys.Keys.BaseAddress, time: _clock);
    }

    public async Task DisposeAsync()
    {
        await _replica.DisposeAsync();
        await _keys.DisposeAsync();
    }

    [Fact]
    public async Task Authenticate_KeyServiceStopped_CachedKeysAcceptedUnknownKeysUnavailable()
    {
        var t = await _keys.NewTenantAsync();
        var neverSeen = await _keys.IssueKeyAsync(t.WorkspaceId, t.Partner);
        Assert.True((await _replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).IsAuthenticated);

        await _keys.Keys.StopAsync();

        for (var i = 0; i < 20; i++)
        {
            var cached = await _replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret);
            Assert.Equal(PartnerAuthStatus.Authenticated, cached.Status);
            Assert.Equal(t.WorkspaceId, cached.WorkspaceId);
        }

        Assert.Equal(PartnerAuthStatus.Unavailable, (await _replica.AuthenticateAsync(t.Partner, t.ApiKey, neverSeen.ClientSecret)).Status);
        Assert.Equal(PartnerAuthStatus.Unavailable,
            (await _replica.AuthenticateAsync(t.Partner, t.ApiKey, "cbk_RRRRRRRRRRRR_" + new string('r', 32))).Status);

        // Credentials that need no KeyService answer stay 401s.
        Assert.Equal(PartnerAuthStatus.InvalidPartnerApiKey, (await _replica.AuthenticateAsync(t.Partner, null, neverSeen.ClientSecret)).Status);

        // Past its 60 s freshness, a cached valid key still works while KeyService cannot answer (StaleIfErrorSeconds)...
        _clock.Advance(TimeSpan.FromSeconds(120));
        Assert.Equal(PartnerAuthStatus.Authenticated, (await _replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).Status);
    }

    [Fact]
    public async Task Authenticate_InvalidationEventLost_CacheLifetimeStillEndsTheKey()
    {
        var t = await _keys.NewTenantAsync();
        Assert.True((await _replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).IsAuthenticated);
        var calls = _replica.ValidationCalls;

        // Invalidate behind the gateway's back: no DataImportKeyInvalidated is published.
        await using (var conn = new NpgsqlConnection(_keys.ConnectionString))
        {
            await conn.ExecuteAsync("UPDATE import_keys SET invalidated_at = now() WHERE key_id = @KeyId", new { t.Key.KeyId });
        }

        // 50 s on the replica's clock (plus the real seconds this test takes on a busy machine): still within 60 s.
        _clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Equal(PartnerAuthStatus.Authenticated, (await _replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).Status);
        Assert.Equal(calls, _replica.ValidationCalls);

        _clock.Advance(TimeSpan.FromSeconds(11));
        Assert.Equal(PartnerAuthStatus.InvalidClientSecret, (await _replica.AuthenticateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).Status);
        Assert.Equal(calls + 1, _replica.ValidationCalls);
    }
}
