using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using MassTransit;
using Npgsql;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// A real CohortService process on a fresh database and RabbitMQ virtual host, plus a test bus on the same vhost that
/// publishes CohortExportReceived / UserProfilesChanged and records CohortUpdated and UserDirectoryChanged.
/// </summary>
public class CohortServiceHost : IAsyncDisposable
{
    public const string AdminToken = "test-admin-token";
    public const string ServiceToken = "test-service-token";

    public Infrastructure Infrastructure { get; private set; } = null!;
    public string Database { get; private set; } = "";
    public string VirtualHost { get; private set; } = "";
    public ServiceProcess Service { get; private set; } = null!;
    public HttpClient Admin { get; private set; } = null!;
    public IBusControl Bus { get; private set; } = null!;
    public ConcurrentQueue<CohortUpdated> CohortUpdates { get; } = new();
    public ConcurrentQueue<UserDirectoryChanged> DirectoryChanges { get; } = new();
    public Dictionary<string, string> Overrides { get; } = new() { ["Cohorts__InlineChangeLimit"] = "50" };

    public async Task StartAsync()
    {
        Infrastructure = await Infrastructure.GetAsync();
        Database = Infrastructure.UniqueName("cohorts_t");
        VirtualHost = Infrastructure.UniqueName("cohorts_t");
        await Infrastructure.CreateVirtualHostAsync(VirtualHost);
        Service = await StartProcessAsync();
        Admin = AdminClient(Service);
        Bus = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(Infrastructure.RabbitHost, (ushort)Infrastructure.RabbitPort, VirtualHost, h =>
            {
                h.Username(Infrastructure.RabbitUser);
                h.Password(Infrastructure.RabbitPassword);
            });
            cfg.ReceiveEndpoint("test-recorder", e =>
            {
                e.Handler<CohortUpdated>(c =>
                {
                    CohortUpdates.Enqueue(c.Message);
                    return Task.CompletedTask;
                });
                e.Handler<UserDirectoryChanged>(c =>
                {
                    DirectoryChanges.Enqueue(c.Message);
                    return Task.CompletedTask;
                });
            });
        });
        await Bus.StartAsync();
    }

    public Dictionary<string, string> Environment(IReadOnlyDictionary<string, string>? extra = null)
    {
        var env = new Dictionary<string, string>
        {
            ["PLATFORM_ADMIN_TOKEN"] = AdminToken,
            ["PLATFORM_SERVICE_TOKEN"] = ServiceToken,
            ["ConnectionStrings__Cohorts"] = ConnectionString,
        }.WithBroker(Infrastructure, VirtualHost);
        foreach (var (k, v) in Overrides)
        {
            env[k] = v;
        }

        foreach (var (k, v) in extra ?? new Dictionary<string, string>())
        {
            env[k] = v;
        }

        return env;
    }

    public string ConnectionString => Infrastructure.ConnectionStringFor(Database);

    public Task<ServiceProcess> StartProcessAsync(IReadOnlyDictionary<string, string>? extra = null) =>
        ServiceProcess.StartAsync("CohortService", Environment(extra));

    public async Task RestartAsync(IReadOnlyDictionary<string, string>? extra = null)
    {
        await Service.DisposeAsync();
        Service = await StartProcessAsync(extra);
        Admin = AdminClient(Service);
    }

    public static HttpClient AdminClient(ServiceProcess service)
    {
        var client = new HttpClient { BaseAddress = service.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);
        return client;
    }

    public async Task<NpgsqlConnection> OpenAsync()
    {
        var conn = new NpgsqlConnection(ConnectionString);
        await conn.OpenAsync();
        return conn;
    }

    /// <summary>A fresh database with CohortService's migrations applied, for tests that drive its classes directly.</summary>
    public static async Task<NpgsqlDataSource> MigratedDataSourceAsync(string namePrefix)
    {
        var infra = await Infrastructure.GetAsync();
        var cs = infra.ConnectionStringFor(Infrastructure.UniqueName(namePrefix));
        ServiceDefaults.Database.Migrate(cs, typeof(CohortServiceHosting).Assembly, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        return NpgsqlDataSource.Create(cs);
    }

    public static string NewWorkspace() => "ws-" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>Bulk-upserts NDJSON lines; returns the parsed response.</summary>
    public async Task<JsonElement> UpsertAsync(string ws, params string[] lines)
    {
        using var content = new StringContent(string.Join("\n", lines) + "\n", Encoding.UTF8, "application/x-ndjson");
        using var response = await Admin.PostAsync($"admin/workspaces/{ws}/users:bulk", content);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    public static CohortExportReceived Changes(string ws, string cohortId, params CohortChange[] changes) => new()
    {
        ImportId = Guid.NewGuid(),
        WorkspaceId = ws,
        Partner = "tinyclues",
        CohortId = cohortId,
        Kind = CohortExportKind.Changes,
        Changes = changes,
        OccurredAt = DateTimeOffset.UtcNow,
    };

    public static CohortChange Add(params string[] externalIds) => new() { ExternalIds = externalIds };

    public static CohortChange Remove(params string[] externalIds) => new() { ExternalIds = externalIds, ShouldRemove = true };

    /// <summary>Publishes an import and waits until CohortService reports it completed or failed.</summary>
    public async Task<JsonElement> ImportAsync(CohortExportReceived message)
    {
        await Bus.Publish(message);
        return await WaitForImportAsync(message.WorkspaceId, message.ImportId);
    }

    public async Task<JsonElement> WaitForImportAsync(string ws, Guid importId) =>
        await Eventually.UntilAsync(async () =>
        {
            using var response = await Admin.GetAsync($"internal/workspaces/{ws}/imports/{importId}");
            if (!response.IsSuccessStatusCode)
            {
                return default;
            }

            return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
        }, e => e.ValueKind == JsonValueKind.Object && e.GetProperty("status").GetString() != "processing",
        because: $"import {importId} completes");

    public async Task<CohortUpdated> WaitForUpdateAsync(string ws, string cohortId, long version) =>
        (await Eventually.UntilAsync(
            () => Task.FromResult(CohortUpdates.FirstOrDefault(u => u.WorkspaceId == ws && u.CohortId == cohortId && u.Version == version)),
            u => u is not null, because: $"CohortUpdated {cohortId} v{version}"))!;

    public List<CohortUpdated> UpdatesOf(string ws, string cohortId) =>
        [.. CohortUpdates.Where(u => u.WorkspaceId == ws && u.CohortId == cohortId).OrderBy(u => u.Version)];

    public static string Path(string value) => Uri.EscapeDataString(value);

    public async Task<(int[] Ordinals, long Version, bool Archived)> MembersAsync(string ws, string cohortId, string partner = "tinyclues")
    {
        using var response = await Admin.GetAsync($"internal/workspaces/{ws}/cohorts/{Path(partner)}/{Path(cohortId)}/members");
        response.EnsureSuccessStatusCode();
        var bytes = await response.Content.ReadAsByteArrayAsync();
        var ordinals = new int[bytes.Length / 4];
        for (var i = 0; i < ordinals.Length; i++)
        {
            ordinals[i] = BitConverter.ToInt32(bytes, i * 4);
        }

        return (ordinals,
            long.Parse(response.Headers.GetValues("X-Cohort-Version").Single(), System.Globalization.CultureInfo.InvariantCulture),
            response.Headers.GetValues("X-Cohort-Archived").Single() == "true");
    }

    public async Task<JsonElement> GetJsonAsync(HttpClient client, string url)
    {
        using var response = await client.GetAsync(url);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{url}: {(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    /// <summary>Ordinal of a user by external id, through the internal directory stream.</summary>
    public async Task<Dictionary<string, int>> OrdinalsAsync(string ws)
    {
        var text = await Admin.GetStringAsync($"internal/workspaces/{ws}/directory");
        var map = new Dictionary<string, int>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var e = JsonDocument.Parse(line).RootElement;
            if (e.GetProperty("external_id").GetString() is { } ext && !e.GetProperty("deleted").GetBoolean())
            {
                map[ext] = e.GetProperty("ordinal").GetInt32();
            }
        }

        return map;
    }

    public virtual async ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        if (Bus is not null)
        {
            await Bus.StopAsync();
        }

        if (Service is not null)
        {
            await Service.DisposeAsync();
        }

        Admin?.Dispose();
        if (Infrastructure is not null)
        {
            await Infrastructure.DeleteVirtualHostAsync(VirtualHost);
        }
    }
}

/// <summary>One CohortService process shared by the tests of the "cohort-service" collection (each test uses its own workspace).</summary>
public sealed class SharedCohortService : CohortServiceHost, IAsyncLifetime
{
    public Task InitializeAsync() => StartAsync();

    Task IAsyncLifetime.DisposeAsync() => DisposeAsync().AsTask();
}

[CollectionDefinition("cohort-service")]
public sealed class CohortServiceCollection : ICollectionFixture<SharedCohortService>;
