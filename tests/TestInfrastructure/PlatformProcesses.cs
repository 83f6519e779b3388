namespace CohortBridge.Testing;

/// <summary>
/// The four services as real processes on one private RabbitMQ virtual host and their own fresh databases:
/// what a partner, a campaign service and an SRE see, through HTTP, the broker and PostgreSQL.
/// Use it as an xunit class fixture (IAsyncLifetime) or start it inside a test.
/// </summary>
public class PlatformProcesses : IAsyncDisposable
{
    public const string AdminToken = "test-admin-token";

    /// <summary>The service token (PLATFORM_SERVICE_TOKEN): internal endpoints and audience reads.</summary>
    public const string ServiceToken = "test-service-token";

    public Infrastructure Infrastructure { get; private set; } = null!;
    public string VirtualHost { get; private set; } = "";
    public IReadOnlyDictionary<string, string> Databases { get; private set; } = new Dictionary<string, string>();
    public ServiceProcess Keys { get; private set; } = null!;
    public ServiceProcess Gateway { get; private set; } = null!;
    public ServiceProcess Cohorts { get; private set; } = null!;
    public ServiceProcess Segments { get; private set; } = null!;
    public int KeysPort { get; } = ServiceProcess.FreePort();
    public int GatewayPort { get; } = ServiceProcess.FreePort();
    public int CohortsPort { get; } = ServiceProcess.FreePort();
    public int SegmentsPort { get; } = ServiceProcess.FreePort();

    /// <summary>Extra configuration per service name (e.g. "ImportGateway" → {"Gateway__MaxIdentifiers": "10"}).</summary>
    public Dictionary<string, Dictionary<string, string>> Overrides { get; } = new();

    public static async Task<PlatformProcesses> StartAsync(Action<PlatformProcesses>? configure = null)
    {
        var platform = new PlatformProcesses();
        configure?.Invoke(platform);
        await platform.StartAllAsync();
        return platform;
    }

    public async Task StartAllAsync()
    {
        Infrastructure = await Infrastructure.GetAsync();
        VirtualHost = Infrastructure.UniqueName("e2e");
        await Infrastructure.CreateVirtualHostAsync(VirtualHost);
        var suffix = Guid.NewGuid().ToString("N")[..10];
        Databases = new Dictionary<string, string>
        {
            ["KeyService"] = $"keys_{suffix}",
            ["ImportGateway"] = $"gateway_{suffix}",
            ["CohortService"] = $"cohorts_{suffix}",
            ["SegmentService"] = $"segments_{suffix}",
        };

        var started = await Task.WhenAll(
            StartServiceAsync("KeyService"),
            StartServiceAsync("ImportGateway"),
            StartServiceAsync("CohortService"),
            StartServiceAsync("SegmentService"));
        (Keys, Gateway, Cohorts, Segments) = (started[0], started[1], started[2], started[3]);
        foreach (var s in started)
        {
            s.Client.DefaultRequestHeaders.Authorization = null;
        }
    }

    /// <summary>The environment a service gets here; tests may use it to start a second replica.</summary>
    public Dictionary<string, string> EnvironmentFor(string service)
    {
        var env = new Dictionary<string, string>
        {
            ["PLATFORM_ADMIN_TOKEN"] = AdminToken,
            ["PLATFORM_SERVICE_TOKEN"] = ServiceToken,
            ["KeyService__BaseUrl"] = $"http://127.0.0.1:{KeysPort}/",
            ["CohortService__BaseUrl"] = $"http://127.0.0.1:{CohortsPort}/",
            ["Gateway__PublicBaseUrl"] = $"http://127.0.0.1:{GatewayPort}/",
        }.WithBroker(Infrastructure, VirtualHost);
        var (name, db) = service switch
        {
            "KeyService" => ("Keys", Databases["KeyService"]),
            "ImportGateway" => ("Gateway", Databases["ImportGateway"]),
            "CohortService" => ("Cohorts", Databases["CohortService"]),
            "SegmentService" => ("Segments", Databases["SegmentService"]),
            _ => throw new ArgumentOutOfRangeException(nameof(service)),
        };
        env[$"ConnectionStrings__{name}"] = Infrastructure.ConnectionStringFor(db);
        if (Overrides.TryGetValue(service, out var extra))
        {
            foreach (var (k, v) in extra)
            {
                env[k] = v;
            }
        }

        return env;
    }

    public int PortOf(string service) => service switch
    {
        "KeyService" => KeysPort,
        "ImportGateway" => GatewayPort,
        "CohortService" => CohortsPort,
        "SegmentService" => SegmentsPort,
        _ => throw new ArgumentOutOfRangeException(nameof(service)),
    };

    /// <summary>Starts (or restarts) one service on its usual port.</summary>
    public Task<ServiceProcess> StartServiceAsync(string service) =>
        ServiceProcess.StartAsync(service, EnvironmentFor(service), PortOf(service));

    public async Task RestartAsync(string service)
    {
        switch (service)
        {
            case "KeyService": await Keys.DisposeAsync(); Keys = await StartServiceAsync(service); break;
            case "ImportGateway": await Gateway.DisposeAsync(); Gateway = await StartServiceAsync(service); break;
            case "CohortService": await Cohorts.DisposeAsync(); Cohorts = await StartServiceAsync(service); break;
            case "SegmentService": await Segments.DisposeAsync(); Segments = await StartServiceAsync(service); break;
            default: throw new ArgumentOutOfRangeException(nameof(service));
        }
    }

    /// <summary>An HttpClient with the admin bearer token for the given service.</summary>
    public HttpClient AdminClient(ServiceProcess service) => BearerClient(service, AdminToken);

    /// <summary>An HttpClient with the service token (what the services and campaign services present).</summary>
    public HttpClient ServiceClient(ServiceProcess service) => BearerClient(service, ServiceToken);

    private static HttpClient BearerClient(ServiceProcess service, string token)
    {
        var client = new HttpClient { BaseAddress = service.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    public virtual async ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        foreach (var s in new[] { Gateway, Keys, Cohorts, Segments })
        {
            if (s is not null)
            {
                await s.DisposeAsync();
            }
        }

        if (Infrastructure is not null && VirtualHost.Length > 0)
        {
            await Infrastructure.DeleteVirtualHostAsync(VirtualHost);
        }
    }
}
