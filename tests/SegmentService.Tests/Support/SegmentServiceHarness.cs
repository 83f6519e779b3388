using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Testing;
using MassTransit;

namespace CohortBridge.SegmentService.Tests.Support;

/// <summary>
/// Real SegmentService processes on a private RabbitMQ virtual host and a fresh database, fed by a test bus that
/// publishes the events CohortService would, with <see cref="FakeCohortService"/> as its catch-up source.
/// </summary>
public sealed class SegmentServiceHarness : IAsyncLifetime
{
    public const string AdminToken = "segments-test-token";
    public const string ServiceToken = "segments-service-token";

    private readonly List<ServiceProcess> _processes = [];

    public Infrastructure Infrastructure { get; private set; } = null!;
    public string VirtualHost { get; private set; } = "";
    public string Database { get; } = Infrastructure.UniqueName("segments_t");
    public FakeCohortService Cohorts { get; private set; } = null!;
    public IBusControl Bus { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Infrastructure = await Infrastructure.GetAsync();
        VirtualHost = Infrastructure.UniqueName("segtest");
        await Infrastructure.CreateVirtualHostAsync(VirtualHost);
        Cohorts = await FakeCohortService.StartAsync();
        Bus = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(Infrastructure.RabbitHost, (ushort)Infrastructure.RabbitPort, VirtualHost, h =>
            {
                h.Username(Infrastructure.RabbitUser);
                h.Password(Infrastructure.RabbitPassword);
                h.PublisherConfirmation = true;
            });
        });
        await Bus.StartAsync();
    }

    public Dictionary<string, string> Environment(string instanceId, string? database = null) => new Dictionary<string, string>
    {
        ["PLATFORM_ADMIN_TOKEN"] = AdminToken,
        ["PLATFORM_SERVICE_TOKEN"] = ServiceToken,
        ["ConnectionStrings__Segments"] = Infrastructure.ConnectionStringFor(database ?? Database),
        ["CohortService__BaseUrl"] = Cohorts.BaseUrl,
        ["Segments__InstanceId"] = instanceId,
        ["Segments__StartupCatchUpTimeoutSeconds"] = "3",
        ["Segments__CatchUpRetrySeconds"] = "1",
    }.WithBroker(Infrastructure, VirtualHost);

    public async Task<ServiceProcess> StartAsync(
        string instanceId, string? database = null, bool waitUntilReady = true, IReadOnlyDictionary<string, string>? overrides = null)
    {
        var environment = Environment(instanceId, database);
        foreach (var (key, value) in overrides ?? new Dictionary<string, string>())
        {
            environment[key] = value;
        }

        var process = await ServiceProcess.StartAsync("SegmentService", environment, waitUntilReady: waitUntilReady);
        process.Client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);
        _processes.Add(process);
        return process;
    }

    public Task PublishAsync<T>(T message) where T : class => Bus.Publish(message);

    /// <summary>Polls a segment's size until it equals <paramref name="expected"/>.</summary>
    public static Task<long> SizeBecomesAsync(ServiceProcess segments, string ws, Guid segmentId, long expected) =>
        Eventually.UntilAsync(
            async () =>
            {
                var body = await segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{ws}/segments/{segmentId}/size");
                return body.GetProperty("size").GetInt64();
            },
            size => size == expected,
            because: $"segment size becomes {expected}");

    /// <summary>Polls ad-hoc evaluation of a single-cohort filter until the cohort is known and has the size.</summary>
    public static Task<long> CohortSizeBecomesAsync(ServiceProcess segments, string ws, string partner, string cohortId, long expected) =>
        Eventually.UntilAsync(
            async () =>
            {
                using var response = await segments.Client.PostAsJsonAsync($"workspaces/{ws}/audiences:evaluate", new
                {
                    filter = new { cohort = new { partner, cohort_id = cohortId }, op = "includes" },
                });
                return response.IsSuccessStatusCode
                    ? (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("size").GetInt64()
                    : -1;
            },
            size => size == expected,
            because: $"cohort {partner}/{cohortId} has {expected} members");

    public static async Task<Guid> CreateSegmentAsync(ServiceProcess segments, string ws, object filter, string name = "segment")
    {
        using var response = await segments.Client.PostAsJsonAsync($"admin/workspaces/{ws}/segments", new { name, filter });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("segment_id").GetGuid();
    }

    public async Task DisposeAsync()
    {
        foreach (var p in _processes)
        {
            await p.DisposeAsync();
        }

        await Bus.StopAsync();
        await Cohorts.DisposeAsync();
        await Infrastructure.DeleteVirtualHostAsync(VirtualHost);
    }
}
