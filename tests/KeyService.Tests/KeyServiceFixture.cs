using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using MassTransit;

namespace CohortBridge.KeyService.Tests;

/// <summary>
/// A real KeyService process on its own database and RabbitMQ virtual host, plus a probe bus on that vhost that records
/// the key events KeyService publishes. Logging is at Debug so that the secret scan sees as much as possible.
/// </summary>
public class KeyServiceFixture : IAsyncLifetime
{
    public const string AdminToken = "test-admin-token";
    public const string ServiceToken = "test-service-token";
    public const string PublicGatewayUrl = "http://gateway.example.test:5080";

    public Infrastructure Infrastructure { get; private set; } = null!;
    public string VirtualHost { get; private set; } = "";
    public string Database { get; private set; } = "";
    public ServiceProcess Keys { get; private set; } = null!;
    public HttpClient Admin { get; private set; } = null!;
    public ConcurrentQueue<DataImportKeyIssued> Issued { get; } = new();
    public ConcurrentQueue<DataImportKeyInvalidated> Invalidated { get; } = new();

    /// <summary>Every secret a test handled; the log scan looks for each of them.</summary>
    public ConcurrentBag<string> Secrets { get; } = [];

    private IBusControl? _probe;

    public string ConnectionString => Infrastructure.ConnectionStringFor(Database);

    public virtual async Task InitializeAsync()
    {
        Infrastructure = await Infrastructure.GetAsync();
        VirtualHost = Infrastructure.UniqueName("keys");
        Database = Infrastructure.UniqueName("keys");
        await Infrastructure.CreateVirtualHostAsync(VirtualHost);
        Keys = await ServiceProcess.StartAsync("KeyService", new Dictionary<string, string>
        {
            ["PLATFORM_ADMIN_TOKEN"] = AdminToken,
            ["PLATFORM_SERVICE_TOKEN"] = ServiceToken,
            ["ConnectionStrings__Keys"] = ConnectionString,
            ["Gateway__PublicBaseUrl"] = PublicGatewayUrl + "/",
            ["KeyUsage__FlushIntervalSeconds"] = "0.5",
            ["Logging__LogLevel__Default"] = "Debug",
            ["Logging__LogLevel__Microsoft.AspNetCore"] = "Debug",
        }.WithBroker(Infrastructure, VirtualHost));
        Admin = new HttpClient { BaseAddress = Keys.BaseAddress };
        Admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);

        _probe = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(Infrastructure.RabbitHost, (ushort)Infrastructure.RabbitPort, VirtualHost, h =>
            {
                h.Username(Infrastructure.RabbitUser);
                h.Password(Infrastructure.RabbitPassword);
            });
            cfg.ReceiveEndpoint("test-key-events-probe", e =>
            {
                e.AutoDelete = true;
                e.Durable = false;
                e.Handler<DataImportKeyIssued>(c =>
                {
                    Issued.Enqueue(c.Message);
                    return Task.CompletedTask;
                });
                e.Handler<DataImportKeyInvalidated>(c =>
                {
                    Invalidated.Enqueue(c.Message);
                    return Task.CompletedTask;
                });
            });
        });
        await _probe.StartAsync();
    }

    public virtual async Task DisposeAsync()
    {
        if (_probe is not null)
        {
            await _probe.StopAsync();
        }

        Admin?.Dispose();
        if (Keys is not null)
        {
            await Keys.DisposeAsync();
        }

        if (VirtualHost.Length > 0)
        {
            await Infrastructure.DeleteVirtualHostAsync(VirtualHost);
        }
    }

    public static string NewPartner() => "p-" + Guid.NewGuid().ToString("N")[..12];

    public static string NewWorkspace() => "ws-" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>Registers a partner and returns its API key.</summary>
    public async Task<string> RegisterPartnerAsync(string partner)
    {
        using var response = await Admin.PostAsJsonAsync("admin/partners", new { partner, display_name = "Partner " + partner });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var key = body.GetProperty("partner_api_key").GetString()!;
        Secrets.Add(key);
        return key;
    }

    public async Task CreateWorkspaceAsync(string workspaceId)
    {
        using var response = await Admin.PostAsJsonAsync("admin/workspaces", new { workspace_id = workspaceId, name = "Workspace " + workspaceId });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    public async Task<IssuedKey> IssueKeyAsync(string workspaceId, string partner)
    {
        using var response = await Admin.PostAsync($"admin/workspaces/{workspaceId}/partners/{partner}/import-keys", null);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var key = new IssuedKey(
            body.GetProperty("key_id").GetGuid(),
            body.GetProperty("client_secret").GetString()!,
            body.GetProperty("created_at").GetDateTimeOffset(),
            body.GetProperty("rest_endpoint").GetString()!);
        Secrets.Add(key.ClientSecret);
        return key;
    }

    public async Task<HttpStatusCode> InvalidateAsync(string workspaceId, string partner, Guid keyId)
    {
        using var response = await Admin.DeleteAsync($"admin/workspaces/{workspaceId}/partners/{partner}/import-keys/{keyId}");
        return response.StatusCode;
    }

    public async Task<JsonElement> ListKeysAsync(string workspaceId, string partner, string query = "")
    {
        using var response = await Admin.GetAsync($"admin/workspaces/{workspaceId}/partners/{partner}/import-keys{query}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    /// <summary>Calls the internal validation endpoint and returns its JSON answer.</summary>
    public async Task<JsonElement> ValidateAsync(string partner, string? apiKey, string? secret)
    {
        using var response = await Admin.PostAsJsonAsync(
            "internal/import-keys/validate", new { partner, partner_api_key = apiKey, client_secret = secret });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    /// <summary>A partner with its API key and a workspace with a key for that partner.</summary>
    public async Task<Tenant> NewTenantAsync()
    {
        var partner = NewPartner();
        var workspace = NewWorkspace();
        var apiKey = await RegisterPartnerAsync(partner);
        await CreateWorkspaceAsync(workspace);
        var key = await IssueKeyAsync(workspace, partner);
        return new Tenant(partner, apiKey, workspace, key);
    }
}

public sealed record IssuedKey(Guid KeyId, string ClientSecret, DateTimeOffset CreatedAt, string RestEndpoint);

public sealed record Tenant(string Partner, string ApiKey, string WorkspaceId, IssuedKey Key);
