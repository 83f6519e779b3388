using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>
/// KeyService and two ImportGateway replicas (one with a tiny rate limit) as real processes on a private vhost, sharing
/// one gateway database; a recording bus bound to CohortExportReceived; a stand-in for CohortService's internal
/// import-status API (an HTTP contract of another service, so a stub server is fair here); partners, workspaces and keys
/// made through KeyService's admin API.
/// </summary>
public sealed class GatewayFixture : IAsyncLifetime
{
    public const string AdminToken = PlatformProcesses.AdminToken;
    public const string Partner = "tinyclues";
    public const string OtherPartner = "otherpartner";

    public Infrastructure Infrastructure { get; private set; } = null!;
    public string VirtualHost { get; private set; } = "";
    public string GatewayDatabase { get; private set; } = "";
    public string KeysDatabase { get; private set; } = "";
    public ServiceProcess Keys { get; private set; } = null!;

    /// <summary>Replica A: default configuration.</summary>
    public ServiceProcess Gateway { get; private set; } = null!;

    /// <summary>Replica B: same database and vhost, rate limit of 3 requests per hour per client secret.</summary>
    public ServiceProcess LimitedGateway { get; private set; } = null!;

    public string Workspace { get; } = "ws-" + Guid.NewGuid().ToString("N")[..8];
    public string OtherWorkspace { get; } = "ws-" + Guid.NewGuid().ToString("N")[..8];
    public string PartnerApiKey { get; private set; } = "";
    public string OtherPartnerApiKey { get; private set; } = "";

    /// <summary>Workspace/Partner key for most tests.</summary>
    public string ClientSecret { get; private set; } = "";

    /// <summary>A second key of Workspace/Partner, used only by the rate-limit test.</summary>
    public string RateLimitedSecret { get; private set; } = "";

    /// <summary>Workspace/OtherPartner key (tenant isolation by partner).</summary>
    public string OtherPartnerSecret { get; private set; } = "";

    /// <summary>OtherWorkspace/Partner key (tenant isolation).</summary>
    public string OtherWorkspaceSecret { get; private set; } = "";

    /// <summary>Messages seen on the bus, by import id.</summary>
    public ConcurrentDictionary<Guid, ConcurrentBag<(Guid? MessageId, CohortExportReceived Message)>> Published { get; } = new();

    /// <summary>What the CohortService stand-in answers, by import id (absent: 404).</summary>
    public ConcurrentDictionary<Guid, (string Workspace, string Json)> CohortServiceImports { get; } = new();

    private IBusControl? _bus;
    private WebApplication? _cohortService;
    private int _cohortServicePort;

    public async Task InitializeAsync()
    {
        Infrastructure = await Infrastructure.GetAsync();
        VirtualHost = Infrastructure.UniqueName("gw");
        await Infrastructure.CreateVirtualHostAsync(VirtualHost);
        var suffix = Guid.NewGuid().ToString("N")[..10];
        GatewayDatabase = $"gateway_{suffix}";
        KeysDatabase = $"keys_{suffix}";

        await StartRecorderAsync();
        await StartCohortServiceStandInAsync();

        var keysPort = ServiceProcess.FreePort();
        Keys = await ServiceProcess.StartAsync("KeyService", new Dictionary<string, string>(BusEnvironment())
        {
            ["ConnectionStrings__Keys"] = Infrastructure.ConnectionStringFor(KeysDatabase),
            ["Gateway__PublicBaseUrl"] = "http://127.0.0.1:5080/",
        }, keysPort);

        // One after the other: two processes creating the same fresh database at once race in Database.Migrate
        // (CREATE DATABASE runs before the advisory lock is taken; reported to the lead).
        Gateway = await StartGatewayAsync();
        LimitedGateway = await StartGatewayAsync(new Dictionary<string, string>
        {
            ["Gateway__RateLimitTokenLimit"] = "3",
            ["Gateway__RateLimitTokensPerPeriod"] = "1",
            ["Gateway__RateLimitReplenishmentPeriod"] = "01:00:00",
        });

        using var admin = new HttpClient { BaseAddress = Keys.BaseAddress };
        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);
        PartnerApiKey = await RegisterPartnerAsync(admin, Partner);
        OtherPartnerApiKey = await RegisterPartnerAsync(admin, OtherPartner);
        await CreateWorkspaceAsync(admin, Workspace);
        await CreateWorkspaceAsync(admin, OtherWorkspace);
        ClientSecret = await IssueKeyAsync(admin, Workspace, Partner);
        RateLimitedSecret = await IssueKeyAsync(admin, Workspace, Partner);
        OtherWorkspaceSecret = await IssueKeyAsync(admin, OtherWorkspace, Partner);
        OtherPartnerSecret = await IssueKeyAsync(admin, Workspace, OtherPartner);
    }

    public Dictionary<string, string> BusEnvironment() => new Dictionary<string, string>
    {
        ["PLATFORM_ADMIN_TOKEN"] = AdminToken,
        ["PLATFORM_SERVICE_TOKEN"] = PlatformProcesses.ServiceToken,
    }.WithBroker(Infrastructure, VirtualHost);

    /// <summary>The environment of a gateway replica of this fixture, with overrides.</summary>
    public Dictionary<string, string> GatewayEnvironment(IReadOnlyDictionary<string, string>? overrides = null)
    {
        var env = BusEnvironment();
        env["ConnectionStrings__Gateway"] = Infrastructure.ConnectionStringFor(GatewayDatabase);
        env["KeyService__BaseUrl"] = Keys?.BaseAddress.ToString() ?? "";
        env["CohortService__BaseUrl"] = $"http://127.0.0.1:{_cohortServicePort}/";
        env["Gateway__PublicBaseUrl"] = "http://gateway.example.test/";
        // Tests that age rows run the purge themselves and count what it deletes; the replicas' own must not race them.
        env["Gateway__PurgeInterval"] = "1.00:00:00";
        foreach (var (k, v) in overrides ?? new Dictionary<string, string>())
        {
            env[k] = v;
        }

        return env;
    }

    public Task<ServiceProcess> StartGatewayAsync(IReadOnlyDictionary<string, string>? overrides = null, bool waitUntilReady = true) =>
        ServiceProcess.StartAsync("ImportGateway", GatewayEnvironment(overrides), waitUntilReady: waitUntilReady);

    /// <summary>Waits until a message with this import id was seen; returns all copies seen so far.</summary>
    public async Task<IReadOnlyList<(Guid? MessageId, CohortExportReceived Message)>> WaitForPublishedAsync(Guid importId)
    {
        await Eventually.UntilAsync(() => Task.FromResult(Published.ContainsKey(importId)), TimeSpan.FromSeconds(20),
            $"import {importId} published");
        return [.. Published[importId]];
    }

    private async Task StartRecorderAsync()
    {
        _bus = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(Infrastructure.RabbitHost, (ushort)Infrastructure.RabbitPort, VirtualHost, h =>
            {
                h.Username(Infrastructure.RabbitUser);
                h.Password(Infrastructure.RabbitPassword);
            });
            cfg.ReceiveEndpoint("gateway-tests-recorder", e =>
            {
                e.Handler<CohortExportReceived>(ctx =>
                {
                    Published.GetOrAdd(ctx.Message.ImportId, _ => []).Add((ctx.MessageId, ctx.Message));
                    return Task.CompletedTask;
                });
            });
        });
        await _bus.StartAsync();
    }

    private async Task StartCohortServiceStandInAsync()
    {
        _cohortServicePort = ServiceProcess.FreePort();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://127.0.0.1:{_cohortServicePort}");
        _cohortService = builder.Build();
        _cohortService.MapGet("/internal/workspaces/{ws}/imports/{importId}", (string ws, Guid importId) =>
            CohortServiceImports.TryGetValue(importId, out var value) && value.Workspace == ws
                ? Results.Content(value.Json, "application/json")
                : Results.NotFound());
        await _cohortService.StartAsync();
    }

    private static async Task<string> RegisterPartnerAsync(HttpClient admin, string partner)
    {
        using var response = await admin.PostAsJsonAsync("admin/partners", new { partner, display_name = partner });
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("partner_api_key").GetString()!;
    }

    private static async Task CreateWorkspaceAsync(HttpClient admin, string workspace)
    {
        using var response = await admin.PostAsJsonAsync("admin/workspaces", new { workspace_id = workspace, name = workspace });
        response.EnsureSuccessStatusCode();
    }

    private static async Task<string> IssueKeyAsync(HttpClient admin, string workspace, string partner)
    {
        using var response = await admin.PostAsync($"admin/workspaces/{workspace}/partners/{partner}/import-keys", null);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("client_secret").GetString()!;
    }

    public async Task DisposeAsync()
    {
        foreach (var p in new[] { Gateway, LimitedGateway, Keys })
        {
            if (p is not null)
            {
                await p.DisposeAsync();
            }
        }

        if (_bus is not null)
        {
            await _bus.StopAsync();
        }

        if (_cohortService is not null)
        {
            await _cohortService.DisposeAsync();
        }

        if (Infrastructure is not null)
        {
            await Infrastructure.DeleteVirtualHostAsync(VirtualHost);
            await using var conn = new Npgsql.NpgsqlConnection(Infrastructure.PostgresConnectionString);
            await conn.OpenAsync();
            foreach (var db in new[] { GatewayDatabase, KeysDatabase })
            {
                await using var drop = new Npgsql.NpgsqlCommand($"DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)", conn);
                await drop.ExecuteNonQueryAsync();
            }
        }
    }
}

[CollectionDefinition(Name)]
public sealed class GatewayCollection : ICollectionFixture<GatewayFixture>
{
    public const string Name = "gateway";
}
