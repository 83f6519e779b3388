using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using CohortBridge.Testing;

namespace CohortBridge.SegmentService.Tests;

/// <summary>
/// The four real services on a fresh vhost and databases: a partner import through the gateway changes a segment's
/// size in SegmentService (through KeyService validation, CohortService matching, CohortUpdated on the broker), a
/// second replica catches up from CohortService's internal API and then follows events on its own queue. (Restarts
/// from the persisted projection are covered by ProjectionTests.)
/// </summary>
public sealed class EndToEndTests : IAsyncLifetime
{
    private const string Partner = "tinyclues";
    private readonly PlatformProcesses _platform = new();
    private readonly string _ws = "ws-" + Guid.NewGuid().ToString("N")[..10];
    private string _partnerApiKey = "";
    private string _clientSecret = "";
    private HttpClient _segments = null!;

    public async Task InitializeAsync()
    {
        await _platform.StartAllAsync();
        _segments = _platform.AdminClient(_platform.Segments);
        using var keys = _platform.AdminClient(_platform.Keys);
        var partner = await PostOkAsync(keys, "admin/partners", new { partner = Partner, display_name = "Tinyclues" });
        _partnerApiKey = partner.GetProperty("partner_api_key").GetString()!;
        await PostOkAsync(keys, "admin/workspaces", new { workspace_id = _ws, name = "E2E" });
        var key = await PostOkAsync(keys, $"admin/workspaces/{_ws}/partners/{Partner}/import-keys", new { });
        _clientSecret = key.GetProperty("client_secret").GetString()!;

        using var cohorts = _platform.AdminClient(_platform.Cohorts);
        var ndjson = string.Join('\n', Enumerable.Range(0, 10).Select(i => $$"""{"external_id":"u{{i}}","device_ids":["dev-u{{i}}"]}"""))
                     + "\n" + """{"device_ids":["anon-1"]}""" + "\n";
        using var bulk = await cohorts.PostAsync($"admin/workspaces/{_ws}/users:bulk",
            new StringContent(ndjson, Encoding.UTF8, "application/x-ndjson"));
        Assert.True(bulk.IsSuccessStatusCode, await bulk.Content.ReadAsStringAsync());
    }

    public async Task DisposeAsync()
    {
        _segments.Dispose();
        await _platform.DisposeAsync();
    }

    [Fact]
    public async Task PartnerImport_ThroughAllServices_ChangesSegmentSizeOnEveryReplica()
    {
        await NameCohortAsync("spring", "Spring buyers");
        await NameCohortAsync("vip", "VIP");
        await Eventually.UntilAsync(
            async () => (await _segments.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/cohorts")).GetProperty("items").GetArrayLength() == 2,
            TimeSpan.FromSeconds(30), "SegmentService learns both cohort names from CohortUpdated");

        var segmentId = await CreateSegmentAsync(new
        {
            and = new object[]
            {
                new { cohort = new { partner = Partner, cohort_id = "spring" }, op = "includes" },
                new { cohort = new { partner = Partner, cohort_id = "vip" }, op = "excludes" },
            },
        });
        Assert.Equal(0, await SizeAsync(_segments, segmentId, 0));

        await ChangeAsync("spring", new { user_ids = new[] { "u1", "u2", "u3", "nobody" }, device_ids = new[] { "anon-1", "dev-u4" }, aliases = (object?)null });
        Assert.Equal(4, await SizeAsync(_segments, segmentId, 4));
        await ChangeAsync("vip", new { user_ids = new[] { "u2" }, device_ids = Array.Empty<string>(), aliases = Array.Empty<object>() });
        Assert.Equal(3, await SizeAsync(_segments, segmentId, 3));
        Assert.True(await IsMemberAsync(_segments, segmentId, "external_id=u1"));
        Assert.True(await IsMemberAsync(_segments, segmentId, "device_id=anon-1"));
        Assert.False(await IsMemberAsync(_segments, segmentId, "external_id=u2"));
        Assert.False(await IsMemberAsync(_segments, segmentId, "device_id=dev-u1"));

        // A second replica, started now, catches up from CohortService's internal API, then follows its own queue.
        var env = _platform.EnvironmentFor("SegmentService");
        env["Segments__InstanceId"] = "replica-two";
        await using var second = await ServiceProcess.StartAsync("SegmentService", env);
        using var secondClient = _platform.AdminClient(second);
        Assert.Equal(3, await SizeAsync(secondClient, segmentId, 3));
        Assert.True(await IsMemberAsync(secondClient, segmentId, "device_id=anon-1"));

        await ChangeAsync("spring", new { user_ids = new[] { "u1" }, device_ids = Array.Empty<string>(), aliases = Array.Empty<object>(), should_remove = true });
        Assert.Equal(2, await SizeAsync(_segments, segmentId, 2));
        Assert.Equal(2, await SizeAsync(secondClient, segmentId, 2));
    }

    private async Task NameCohortAsync(string cohortId, string name)
    {
        using var response = await _platform.Gateway.Client.PostAsJsonAsync($"partners/{Partner}/cohorts", new
        {
            partner_api_key = _partnerApiKey, client_secret = _clientSecret, cohort_id = cohortId, name,
            created_at = DateTimeOffset.UtcNow.ToString("O"),
        });
        Assert.True(response.StatusCode == HttpStatusCode.Accepted, await response.Content.ReadAsStringAsync());
    }

    private async Task ChangeAsync(string cohortId, object change)
    {
        using var response = await _platform.Gateway.Client.PostAsJsonAsync($"partners/{Partner}/cohorts/users", new
        {
            partner_api_key = _partnerApiKey, client_secret = _clientSecret, cohort_id = cohortId, cohort_changes = new[] { change },
        });
        Assert.True(response.StatusCode == HttpStatusCode.Accepted, await response.Content.ReadAsStringAsync());
    }

    private async Task<Guid> CreateSegmentAsync(object filter)
    {
        var body = await PostOkAsync(_segments, $"admin/workspaces/{_ws}/segments", new { name = "spring not vip", filter });
        return body.GetProperty("segment_id").GetGuid();
    }

    private Task<long> SizeAsync(HttpClient client, Guid segmentId, long expected) =>
        Eventually.UntilAsync(
            async () => (await client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/segments/{segmentId}/size")).GetProperty("size").GetInt64(),
            size => size == expected, TimeSpan.FromSeconds(30), $"segment size becomes {expected}");

    private async Task<bool> IsMemberAsync(HttpClient client, Guid segmentId, string query) =>
        (await client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/segments/{segmentId}/members/check?{query}"))
        .GetProperty("member").GetBoolean();

    private static async Task<JsonElement> PostOkAsync(HttpClient client, string path, object body)
    {
        using var response = await client.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{path}: {(int)response.StatusCode} {text}");
        return text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
    }
}
