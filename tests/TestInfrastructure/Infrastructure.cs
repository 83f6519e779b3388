using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Npgsql;
using Testcontainers.PostgreSql;
using Testcontainers.RabbitMq;

namespace CohortBridge.Testing;

/// <summary>
/// The real PostgreSQL and RabbitMQ the tests run against, wherever they come from:
/// servers named by environment variables (TEST_POSTGRES, TEST_RABBITMQ_HOST, ...), else Testcontainers when a
/// Docker engine answers, else the private local servers that scripts/infra.sh runs (started here if needed).
/// One instance per test run; every test class takes its own database names and RabbitMQ virtual host.
/// </summary>
public sealed class Infrastructure
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static Infrastructure? _instance;

    public required string PostgresConnectionString { get; init; }
    public required string RabbitHost { get; init; }
    public required int RabbitPort { get; init; }
    public required int RabbitManagementPort { get; init; }
    public string RabbitUser { get; init; } = "guest";
    public string RabbitPassword { get; init; } = "guest";
    public required string Source { get; init; }

    public static async Task<Infrastructure> GetAsync()
    {
        await Gate.WaitAsync();
        try
        {
            return _instance ??= await CreateAsync();
        }
        finally
        {
            Gate.Release();
        }
    }

    /// <summary>A connection string for a database of this run (the service under test creates it).</summary>
    public string ConnectionStringFor(string database) =>
        new NpgsqlConnectionStringBuilder(PostgresConnectionString) { Database = database }.ConnectionString;

    /// <summary>Creates a RabbitMQ virtual host so that this test's exchanges and queues see no other test's traffic.</summary>
    public async Task CreateVirtualHostAsync(string name)
    {
        using var http = ManagementClient();
        var vhost = Uri.EscapeDataString(name);
        (await http.PutAsync($"api/vhosts/{vhost}", null)).EnsureSuccessStatusCode();
        var permissions = new StringContent("""{"configure":".*","write":".*","read":".*"}""", Encoding.UTF8, "application/json");
        (await http.PutAsync($"api/permissions/{vhost}/{Uri.EscapeDataString(RabbitUser)}", permissions)).EnsureSuccessStatusCode();
    }

    public async Task DeleteVirtualHostAsync(string name)
    {
        using var http = ManagementClient();
        await http.DeleteAsync($"api/vhosts/{Uri.EscapeDataString(name)}");
    }

    /// <summary>The RabbitMQ management HTTP API (queues, message counts) for assertions on error queues.</summary>
    public HttpClient ManagementClient()
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://{RabbitHost}:{RabbitManagementPort}/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{RabbitUser}:{RabbitPassword}")));
        return http;
    }

    /// <summary>
    /// The queues of a virtual host as the management API lists them. Its statistics lag a few seconds, and a queue
    /// just declared may not list its type or consumers yet.
    /// </summary>
    public async Task<JsonElement[]> QueuesAsync(string virtualHost)
    {
        using var http = ManagementClient();
        using var doc = JsonDocument.Parse(await http.GetStringAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}"));
        return [.. doc.RootElement.EnumerateArray().Select(q => q.Clone())];
    }

    /// <summary>One queue as the management API shows it, or null while it does not exist.</summary>
    public async Task<JsonElement?> QueueAsync(string virtualHost, string name)
    {
        using var http = ManagementClient();
        using var response = await http.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(name)}");
        if (!response.IsSuccessStatusCode)
        {
            return null;
        }

        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.Clone();
    }

    /// <summary>
    /// Puts a message straight onto a queue through the default exchange, as the management UI's "Publish message" and
    /// "Move messages" do; throws unless the broker routed it.
    /// </summary>
    public async Task PublishToQueueAsync(string virtualHost, string queue, string payload, object properties)
    {
        using var http = ManagementClient();
        using var response = await http.PostAsJsonAsync($"api/exchanges/{Uri.EscapeDataString(virtualHost)}/amq.default/publish",
            new { properties, routing_key = queue, payload, payload_encoding = "string" });
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        if (!doc.RootElement.GetProperty("routed").GetBoolean())
        {
            throw new InvalidOperationException($"The broker routed the message to no queue (is '{queue}' declared?).");
        }
    }

    public static string UniqueName(string prefix) =>
        $"{prefix}_{Guid.NewGuid():N}"[..Math.Min(prefix.Length + 13, 60)].ToLowerInvariant();

    private static async Task<Infrastructure> CreateAsync()
    {
        var pg = Environment.GetEnvironmentVariable("TEST_POSTGRES");
        var rabbitHost = Environment.GetEnvironmentVariable("TEST_RABBITMQ_HOST");
        if (!string.IsNullOrEmpty(pg) && !string.IsNullOrEmpty(rabbitHost))
        {
            return new Infrastructure
            {
                PostgresConnectionString = pg,
                RabbitHost = rabbitHost,
                RabbitPort = int.Parse(Environment.GetEnvironmentVariable("TEST_RABBITMQ_PORT") ?? "5672"),
                RabbitManagementPort = int.Parse(Environment.GetEnvironmentVariable("TEST_RABBITMQ_MGMT_PORT") ?? "15672"),
                RabbitUser = Environment.GetEnvironmentVariable("TEST_RABBITMQ_USER") ?? "guest",
                RabbitPassword = Environment.GetEnvironmentVariable("TEST_RABBITMQ_PASSWORD") ?? "guest",
                Source = "environment",
            };
        }

        if (Environment.GetEnvironmentVariable("TEST_NO_DOCKER") != "1" && await TryContainersAsync() is { } containers)
        {
            return containers;
        }

        return await LocalServersAsync();
    }

    private static async Task<Infrastructure?> TryContainersAsync()
    {
        PostgreSqlContainer postgres;
        try
        {
            // Build() throws DockerUnavailableException at once where no engine answers.
            postgres = new PostgreSqlBuilder("postgres:15").Build();
        }
        catch (Exception)
        {
            return null;
        }

        var rabbit = new RabbitMqBuilder("rabbitmq:3.13-management").WithUsername("guest").WithPassword("guest")
            .WithPortBinding(15672, true).Build();
        await Task.WhenAll(postgres.StartAsync(), rabbit.StartAsync());
        return new Infrastructure
        {
            PostgresConnectionString = postgres.GetConnectionString(),
            RabbitHost = rabbit.Hostname,
            RabbitPort = rabbit.GetMappedPublicPort(5672),
            RabbitManagementPort = rabbit.GetMappedPublicPort(15672),
            Source = "testcontainers",
        };
    }

    private static async Task<Infrastructure> LocalServersAsync()
    {
        var script = Path.Combine(RepositoryRoot(), "scripts", "infra.sh");
        using var process = Process.Start(new ProcessStartInfo("bash", [script, "start"])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"scripts/infra.sh start failed: {await stderr}");
        }

        return new Infrastructure
        {
            PostgresConnectionString = $"Host=127.0.0.1;Port={Env("COHORTBRIDGE_PG_PORT", 54329)};Username=postgres;Database=postgres",
            RabbitHost = "127.0.0.1",
            RabbitPort = Env("COHORTBRIDGE_AMQP_PORT", 56729),
            RabbitManagementPort = Env("COHORTBRIDGE_MGMT_PORT", 56731),
            Source = "local",
        };
    }

    private static int Env(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out var v) ? v : fallback;

    public static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Platform.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("Platform.sln not found above " + AppContext.BaseDirectory);
    }
}

public static class ServiceEnvironmentExtensions
{
    /// <summary>Points a service process at this run's broker, on the given virtual host.</summary>
    public static Dictionary<string, string> WithBroker(this Dictionary<string, string> environment, Infrastructure infrastructure, string virtualHost)
    {
        environment["RabbitMq__Host"] = infrastructure.RabbitHost;
        environment["RabbitMq__Port"] = infrastructure.RabbitPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        environment["RabbitMq__VirtualHost"] = virtualHost;
        environment["RabbitMq__Username"] = infrastructure.RabbitUser;
        environment["RabbitMq__Password"] = infrastructure.RabbitPassword;
        return environment;
    }
}
