using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using CohortBridge.Testing;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>
/// A tenant on a running platform: a partner with its API key, a workspace, a data import key, and helpers that call
/// the public APIs exactly as a partner, an operator and a campaign service would.
/// </summary>
internal sealed class PartnerScenario
{
    private readonly PlatformProcesses _platform;

    private PartnerScenario(PlatformProcesses platform, string partner, string workspace, string partnerApiKey, string clientSecret, string keyId)
    {
        _platform = platform;
        Partner = partner;
        Workspace = workspace;
        PartnerApiKey = partnerApiKey;
        ClientSecret = clientSecret;
        KeyId = keyId;
    }

    public string Partner { get; }
    public string Workspace { get; }
    public string PartnerApiKey { get; }
    public string ClientSecret { get; }
    public string KeyId { get; }

    public static async Task<PartnerScenario> CreateAsync(PlatformProcesses platform)
    {
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var partner = $"tinyclues{suffix}";
        var workspace = $"acme-{suffix}";
        using var keys = platform.AdminClient(platform.Keys);
        var partnerBody = await ReadJsonAsync(await keys.PostAsJsonAsync("admin/partners", new { partner, display_name = "Tinyclues" }), HttpStatusCode.Created);
        await ReadJsonAsync(await keys.PostAsJsonAsync("admin/workspaces", new { workspace_id = workspace, name = "Acme" }), HttpStatusCode.Created);
        var key = await ReadJsonAsync(await keys.PostAsync($"admin/workspaces/{workspace}/partners/{partner}/import-keys", null), HttpStatusCode.Created);
        return new PartnerScenario(platform, partner, workspace,
            partnerBody["partner_api_key"]!.GetValue<string>(), key["client_secret"]!.GetValue<string>(), key["key_id"]!.ToString());
    }

    public async Task<JsonNode> UpsertUsersAsync(params string[] ndjsonLines)
    {
        using var cohorts = _platform.AdminClient(_platform.Cohorts);
        using var content = new StringContent(string.Join('\n', ndjsonLines) + "\n", Encoding.UTF8, "application/x-ndjson");
        return await ReadJsonAsync(await cohorts.PostAsync($"admin/workspaces/{Workspace}/users:bulk", content), HttpStatusCode.OK);
    }

    public Task<HttpResponseMessage> NameCohortAsync(string cohortId, string name) =>
        SendAsPartnerAsync(() => _platform.Gateway.Client.PostAsJsonAsync($"partners/{Partner}/cohorts", new
        {
            partner_api_key = PartnerApiKey,
            client_secret = ClientSecret,
            cohort_id = cohortId,
            name,
            created_at = "2026-11-22T19:20:30+01:00",
        }));

    public Task<HttpResponseMessage> ChangeAsync(string cohortId, object[] changes, string? clientSecret = null) =>
        SendAsPartnerAsync(() => _platform.Gateway.Client.PostAsJsonAsync($"partners/{Partner}/cohorts/users", new
        {
            partner_api_key = PartnerApiKey,
            client_secret = clientSecret ?? ClientSecret,
            cohort_id = cohortId,
            cohort_changes = changes,
        }));

    /// <summary>
    /// Sends like a partner connector does: a 503 (broker or KeyService briefly unavailable, e.g. on an overloaded CI
    /// machine) is retried after its Retry-After, a few times; every other answer is returned as it is.
    /// </summary>
    private static async Task<HttpResponseMessage> SendAsPartnerAsync(Func<Task<HttpResponseMessage>> send)
    {
        for (var attempt = 1; ; attempt++)
        {
            var response = await send();
            if (response.StatusCode != HttpStatusCode.ServiceUnavailable || attempt == 5)
            {
                return response;
            }

            var retryAfter = response.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(1);
            response.Dispose();
            await Task.Delay(retryAfter > TimeSpan.FromSeconds(5) ? TimeSpan.FromSeconds(5) : retryAfter);
        }
    }

    public Task<HttpResponseMessage> ArchiveAsync(string cohortId) =>
        SendAsPartnerAsync(() =>
        {
            var request = new HttpRequestMessage(HttpMethod.Delete, $"partners/{Partner}/cohorts/{Uri.EscapeDataString(cohortId)}");
            request.Headers.Add("X-Partner-Api-Key", PartnerApiKey);
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", ClientSecret);
            return _platform.Gateway.Client.SendAsync(request);
        });

    public static object Change(string[]? userIds = null, string[]? deviceIds = null, object[]? aliases = null, bool remove = false) =>
        new { user_ids = userIds ?? [], device_ids = deviceIds ?? [], aliases = aliases ?? [], should_remove = remove };

    public async Task<JsonNode> ImportStatusAsync(string importId) =>
        await ReadJsonAsync(await GetImportStatusAsync(importId), HttpStatusCode.OK);

    public async Task<HttpResponseMessage> GetImportStatusAsync(string importId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"partners/{Partner}/imports/{importId}");
        request.Headers.Add("X-Partner-Api-Key", PartnerApiKey);
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", ClientSecret);
        return await _platform.Gateway.Client.SendAsync(request);
    }

    public Task<JsonNode> WaitForImportAsync(string importId) =>
        Eventually.UntilAsync(() => ImportStatusAsync(importId), s => s["status"]!.GetValue<string>() is "completed" or "failed",
            TimeSpan.FromSeconds(30), $"import {importId} completes");

    /// <summary>Creates a segment once SegmentService knows the cohorts it names (it learns them from CohortUpdated).</summary>
    public async Task<string> CreateSegmentAsync(string name, object filter)
    {
        using var segments = _platform.AdminClient(_platform.Segments);
        var response = await Eventually.UntilAsync(
            () => segments.PostAsJsonAsync($"admin/workspaces/{Workspace}/segments", new { name, filter }),
            r => r.StatusCode != HttpStatusCode.BadRequest, TimeSpan.FromSeconds(20), "segment's cohorts known to SegmentService");
        var body = await ReadJsonAsync(response, HttpStatusCode.Created);
        return body["segment_id"]!.ToString();
    }

    public object CohortFilter(string cohortId, string op = "includes") => new { cohort = new { partner = Partner, cohort_id = cohortId }, op };

    public async Task<long> SegmentSizeAsync(string segmentId)
    {
        using var segments = _platform.AdminClient(_platform.Segments);
        var body = await ReadJsonAsync(await segments.GetAsync($"workspaces/{Workspace}/segments/{segmentId}/size"), HttpStatusCode.OK);
        return body["size"]!.GetValue<long>();
    }

    public async Task<bool> IsMemberAsync(string segmentId, string query)
    {
        using var segments = _platform.AdminClient(_platform.Segments);
        var body = await ReadJsonAsync(await segments.GetAsync($"workspaces/{Workspace}/segments/{segmentId}/members/check?{query}"), HttpStatusCode.OK);
        return body["member"]!.GetValue<bool>();
    }

    public async Task<string> MembersAsync(string segmentId)
    {
        using var segments = _platform.AdminClient(_platform.Segments);
        return await segments.GetStringAsync($"workspaces/{Workspace}/segments/{segmentId}/members");
    }

    /// <summary>CohortService's change log of a cohort after a version (the internal endpoint SegmentService catches up from).</summary>
    public async Task<JsonNode> ChangesAfterAsync(string cohortId, long after)
    {
        using var cohorts = _platform.AdminClient(_platform.Cohorts);
        return await ReadJsonAsync(
            await cohorts.GetAsync($"internal/workspaces/{Workspace}/cohorts/{Partner}/{cohortId}/changes?after={after}"), HttpStatusCode.OK);
    }

    public static async Task<JsonNode> ReadJsonAsync(HttpResponseMessage response, HttpStatusCode expected)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"expected {(int)expected}, got {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text.Length == 0 ? "{}" : text)!;
    }
}
