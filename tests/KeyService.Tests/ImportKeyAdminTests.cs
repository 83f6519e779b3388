using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using CohortBridge.Testing;
using Dapper;
using Npgsql;

namespace CohortBridge.KeyService.Tests;

/// <summary>The KeyService admin and internal APIs over HTTP, against the real process, database and broker.</summary>
public sealed partial class ImportKeyAdminTests(KeyServiceFixture keys) : IClassFixture<KeyServiceFixture>
{
    [Fact]
    public async Task KeyLifecycle_IssueListValidateInvalidate_BehavesAsDocumented()
    {
        var partner = KeyServiceFixture.NewPartner();
        var workspace = KeyServiceFixture.NewWorkspace();
        var apiKey = await keys.RegisterPartnerAsync(partner);
        await keys.CreateWorkspaceAsync(workspace);

        // Two live keys at once (rotation without downtime).
        var first = await keys.IssueKeyAsync(workspace, partner);
        var second = await keys.IssueKeyAsync(workspace, partner);
        Assert.Matches(SecretPattern(), first.ClientSecret);
        Assert.Matches(PartnerKeyPattern(), apiKey);
        Assert.NotEqual(first.ClientSecret, second.ClientSecret);
        Assert.Equal(KeyServiceFixture.PublicGatewayUrl, first.RestEndpoint);

        foreach (var key in new[] { first, second })
        {
            var valid = await keys.ValidateAsync(partner, apiKey, key.ClientSecret);
            Assert.Equal("valid", valid.GetProperty("result").GetString());
            Assert.Equal(workspace, valid.GetProperty("workspace_id").GetString());
            Assert.Equal(key.KeyId, valid.GetProperty("key_id").GetGuid());
        }

        var list = await keys.ListKeysAsync(workspace, partner);
        var items = list.GetProperty("items").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.Null, list.GetProperty("next_cursor").ValueKind);
        Assert.Equal([first.KeyId, second.KeyId], items.Select(i => i.GetProperty("key_id").GetGuid()));
        Assert.All(items, i => Assert.Equal(JsonValueKind.Null, i.GetProperty("invalidated_at").ValueKind));
        Assert.Equal(first.ClientSecret.Split('_')[1], items[0].GetProperty("prefix").GetString());
        Assert.DoesNotContain(first.ClientSecret, list.GetRawText(), StringComparison.Ordinal);
        Assert.DoesNotContain(first.ClientSecret.Split('_')[2], list.GetRawText(), StringComparison.Ordinal);

        // last_used_at is written in batches (KeyUsage:FlushIntervalSeconds = 0.5 here).
        await Eventually.UntilAsync(
            async () => (await keys.ListKeysAsync(workspace, partner)).GetProperty("items")[0].GetProperty("last_used_at").ValueKind,
            kind => kind == JsonValueKind.String, TimeSpan.FromSeconds(10), "last_used_at is recorded");

        Assert.Equal(HttpStatusCode.NoContent, await keys.InvalidateAsync(workspace, partner, first.KeyId));
        Assert.Equal(HttpStatusCode.NoContent, await keys.InvalidateAsync(workspace, partner, first.KeyId));

        var refused = await keys.ValidateAsync(partner, apiKey, first.ClientSecret);
        Assert.Equal("invalid_client_secret", refused.GetProperty("result").GetString());
        Assert.False(refused.TryGetProperty("workspace_id", out var ws) && ws.ValueKind == JsonValueKind.String);
        Assert.Equal("valid", (await keys.ValidateAsync(partner, apiKey, second.ClientSecret)).GetProperty("result").GetString());

        var after = (await keys.ListKeysAsync(workspace, partner)).GetProperty("items").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.String, after[0].GetProperty("invalidated_at").ValueKind);
        Assert.Equal(JsonValueKind.Null, after[1].GetProperty("invalidated_at").ValueKind);

        // Both events reach the bus; the second DELETE announces the invalidation again (idempotent for consumers).
        await Eventually.UntilAsync(
            () => Task.FromResult(keys.Issued.Count(e => e.WorkspaceId == workspace)),
            n => n == 2, TimeSpan.FromSeconds(10), "DataImportKeyIssued published twice");
        await Eventually.UntilAsync(
            () => Task.FromResult(keys.Invalidated.Where(e => e.KeyId == first.KeyId).ToList()),
            l => l.Count >= 1 && l.All(e => e.Partner == partner && e.WorkspaceId == workspace && e.Prefix == first.ClientSecret.Split('_')[1]),
            TimeSpan.FromSeconds(10), "DataImportKeyInvalidated published");
    }

    [Fact]
    public async Task Validate_KeyOfAnotherPartnerOrWorkspace_RefusedOrResolvedToItsOwnWorkspace()
    {
        var a = await keys.NewTenantAsync();
        var otherPartner = KeyServiceFixture.NewPartner();
        var otherApiKey = await keys.RegisterPartnerAsync(otherPartner);
        var keyForOtherPartner = await keys.IssueKeyAsync(a.WorkspaceId, otherPartner);

        // The key exists but was issued for another partner.
        Assert.Equal("partner_not_enabled",
            (await keys.ValidateAsync(a.Partner, a.ApiKey, keyForOtherPartner.ClientSecret)).GetProperty("result").GetString());

        // Another partner's API key on this partner's path.
        Assert.Equal("invalid_partner_api_key",
            (await keys.ValidateAsync(a.Partner, otherApiKey, a.Key.ClientSecret)).GetProperty("result").GetString());

        // A key of another workspace authenticates as that workspace, never as this one.
        var otherWorkspace = KeyServiceFixture.NewWorkspace();
        await keys.CreateWorkspaceAsync(otherWorkspace);
        var keyOfOtherWorkspace = await keys.IssueKeyAsync(otherWorkspace, a.Partner);
        var answer = await keys.ValidateAsync(a.Partner, a.ApiKey, keyOfOtherWorkspace.ClientSecret);
        Assert.Equal("valid", answer.GetProperty("result").GetString());
        Assert.Equal(otherWorkspace, answer.GetProperty("workspace_id").GetString());
    }

    [Theory]
    [InlineData(null, "invalid_partner_api_key")]
    [InlineData("", "invalid_partner_api_key")]
    [InlineData("cbp_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "invalid_partner_api_key")]
    [InlineData("not a key at all", "invalid_partner_api_key")]
    public async Task Validate_BadPartnerApiKey_InvalidPartnerApiKey(string? apiKey, string expected)
    {
        var t = await keys.NewTenantAsync();
        Assert.Equal(expected, (await keys.ValidateAsync(t.Partner, apiKey, t.Key.ClientSecret)).GetProperty("result").GetString());
    }

    [Fact]
    public async Task Validate_TamperedOrUnknownSecret_InvalidClientSecret()
    {
        var t = await keys.NewTenantAsync();
        var s = t.Key.ClientSecret;
        var tampered = s[..^1] + (s[^1] == 'a' ? 'b' : 'a');
        foreach (var secret in new[] { tampered, "cbk_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "", null, s + "x" })
        {
            Assert.Equal("invalid_client_secret", (await keys.ValidateAsync(t.Partner, t.ApiKey, secret)).GetProperty("result").GetString());
        }

        // The path's partner decides too: the right API key on another partner's path is refused.
        Assert.Equal("invalid_partner_api_key",
            (await keys.ValidateAsync(KeyServiceFixture.NewPartner(), t.ApiKey, s)).GetProperty("result").GetString());
    }

    public static TheoryData<string, string> AdminEndpoints => new()
    {
        { "POST", "admin/partners" },
        { "POST", "admin/workspaces" },
        { "POST", "admin/workspaces/ws-1/partners/p-1/import-keys" },
        { "GET", "admin/workspaces/ws-1/partners/p-1/import-keys" },
        { "GET", "admin/workspaces/ws-1/partners/p-1/import-keys?limit=abc&cursor=%%%" },
        { "POST", "admin/workspaces/Bad_WS/partners/p-1/import-keys" },
        { "DELETE", "admin/workspaces/ws-1/partners/p-1/import-keys/00000000-0000-0000-0000-000000000001" },
        // The gateway's internal calls carry the service token: without it they would answer which keys are valid.
        { "POST", "internal/import-keys/validate" },
        { "POST", "internal/import-keys/usage" },
    };

    [Theory]
    [MemberData(nameof(AdminEndpoints))]
    public async Task AdminEndpoint_WithoutOrWithWrongToken_Returns401(string method, string path)
    {
        // The service token opens the internal endpoints only, never an admin API.
        string?[] tokens = path.StartsWith("admin/", StringComparison.Ordinal)
            ? [null, "wrong-token", KeyServiceFixture.AdminToken + "x", "", KeyServiceFixture.ServiceToken]
            : [null, "wrong-token", KeyServiceFixture.AdminToken + "x", "", KeyServiceFixture.ServiceToken + "x"];
        foreach (var token in tokens)
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path)
            {
                Content = method == "POST" ? new StringContent("{not json", Encoding.UTF8, "application/json") : null,
            };
            if (token is not null)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            }

            using var response = await keys.Keys.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task InternalEndpoint_WithServiceOrAdminToken_IsServed()
    {
        foreach (var token in new[] { KeyServiceFixture.ServiceToken, KeyServiceFixture.AdminToken })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "internal/import-keys/usage")
            {
                Content = new StringContent("{}", Encoding.UTF8, "application/json"),
                Headers = { Authorization = new AuthenticationHeaderValue("Bearer", token) },
            };

            using var response = await keys.Keys.Client.SendAsync(request);
            // Past the token check: the body's own validation answers.
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }
    }

    [Fact]
    public async Task RegisterPartner_Duplicate_Returns409()
    {
        var partner = KeyServiceFixture.NewPartner();
        await keys.RegisterPartnerAsync(partner);
        using var again = await keys.Admin.PostAsJsonAsync("admin/partners", new { partner, display_name = "x" });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        Assert.Equal("application/problem+json", again.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task CreateWorkspace_Duplicate_Returns409()
    {
        var workspace = KeyServiceFixture.NewWorkspace();
        await keys.CreateWorkspaceAsync(workspace);
        using var again = await keys.Admin.PostAsJsonAsync("admin/workspaces", new { workspace_id = workspace, name = "x" });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
    }

    [Theory]
    [InlineData("admin/partners", """{"partner":"Upper","display_name":"x"}""")]
    [InlineData("admin/partners", """{"partner":"-starts-with-dash","display_name":"x"}""")]
    [InlineData("admin/partners", """{"display_name":"x"}""")]
    [InlineData("admin/partners", """{"partner":"ok","display_name":"   "}""")]
    [InlineData("admin/partners", """{"partner":"ok-nul","display_name":"a\u0000b"}""")]
    [InlineData("admin/partners", """[1,2]""")]
    [InlineData("admin/partners", """{broken""")]
    [InlineData("admin/workspaces", """{"workspace_id":"has_underscore","name":"x"}""")]
    [InlineData("admin/workspaces", """{"workspace_id":"ws-ok\n","name":"x"}""")]
    [InlineData("admin/workspaces", """{"workspace_id":42,"name":"x"}""")]
    [InlineData("admin/workspaces", """{"workspace_id":"ws-nul","name":"a\u0000b"}""")]
    public async Task Create_InvalidBody_Returns400(string path, string json)
    {
        using var response = await keys.Admin.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task IssueKey_UnknownWorkspaceOrPartner_Returns404()
    {
        var t = await keys.NewTenantAsync();
        using var unknownWorkspace = await keys.Admin.PostAsync(
            $"admin/workspaces/{KeyServiceFixture.NewWorkspace()}/partners/{t.Partner}/import-keys", null);
        using var unknownPartner = await keys.Admin.PostAsync(
            $"admin/workspaces/{t.WorkspaceId}/partners/{KeyServiceFixture.NewPartner()}/import-keys", null);
        using var listUnknown = await keys.Admin.GetAsync(
            $"admin/workspaces/{KeyServiceFixture.NewWorkspace()}/partners/{t.Partner}/import-keys");
        Assert.Equal(HttpStatusCode.NotFound, unknownWorkspace.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, unknownPartner.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, listUnknown.StatusCode);
    }

    [Fact]
    public async Task IssueKey_InvalidIds_Returns400()
    {
        using var badWorkspace = await keys.Admin.PostAsync("admin/workspaces/Bad_WS/partners/p-1/import-keys", null);
        using var badPartner = await keys.Admin.PostAsync("admin/workspaces/ws-1/partners/Bad%20P/import-keys", null);
        using var badKeyId = await keys.Admin.DeleteAsync("admin/workspaces/ws-1/partners/p-1/import-keys/not-a-uuid");
        Assert.Equal(HttpStatusCode.BadRequest, badWorkspace.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, badPartner.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, badKeyId.StatusCode);
    }

    [Fact]
    public async Task Invalidate_UnknownKeyOrKeyOfAnotherWorkspace_Returns404AndKeyStaysValid()
    {
        var t = await keys.NewTenantAsync();
        var otherWorkspace = KeyServiceFixture.NewWorkspace();
        await keys.CreateWorkspaceAsync(otherWorkspace);
        Assert.Equal(HttpStatusCode.NotFound, await keys.InvalidateAsync(t.WorkspaceId, t.Partner, Guid.NewGuid()));
        Assert.Equal(HttpStatusCode.NotFound, await keys.InvalidateAsync(otherWorkspace, t.Partner, t.Key.KeyId));
        Assert.Equal("valid", (await keys.ValidateAsync(t.Partner, t.ApiKey, t.Key.ClientSecret)).GetProperty("result").GetString());
    }

    [Fact]
    public async Task ListKeys_MoreThanOnePage_FollowsCursor()
    {
        var t = await keys.NewTenantAsync();
        var issued = new List<Guid> { t.Key.KeyId };
        for (var i = 0; i < 4; i++)
        {
            issued.Add((await keys.IssueKeyAsync(t.WorkspaceId, t.Partner)).KeyId);
        }

        var seen = new List<Guid>();
        string? cursor = null;
        var pages = 0;
        do
        {
            var page = await keys.ListKeysAsync(t.WorkspaceId, t.Partner, "?limit=2" + (cursor is null ? "" : "&cursor=" + cursor));
            seen.AddRange(page.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("key_id").GetGuid()));
            cursor = page.GetProperty("next_cursor").GetString();
            pages++;
        }
        while (cursor is not null && pages < 10);

        Assert.Equal(3, pages);
        Assert.Equal(issued, seen);
        foreach (var query in new[] { "?cursor=%%%", "?cursor=AAAA", "?limit=0", "?limit=501", "?limit=abc", "?limit=-1" })
        {
            using var bad = await keys.Admin.GetAsync($"admin/workspaces/{t.WorkspaceId}/partners/{t.Partner}/import-keys{query}");
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        }
    }

    [Fact]
    public async Task Database_AfterIssuingKeys_HoldsOnlyHashesNeverSecrets()
    {
        var t = await keys.NewTenantAsync();
        await using var conn = new NpgsqlConnection(keys.ConnectionString);
        var keyRows = (await conn.QueryAsync("SELECT * FROM import_keys WHERE key_id = @KeyId", new { t.Key.KeyId })).ToList();
        var partnerRows = (await conn.QueryAsync("SELECT * FROM partners WHERE partner = @Partner", new { t.Partner })).ToList();
        var dumped = JsonSerializer.Serialize(keyRows.Concat(partnerRows).Select(r => (IDictionary<string, object?>)r)
            .Select(r => r.ToDictionary(kv => kv.Key, kv => kv.Value is byte[] b ? Convert.ToHexString(b) : kv.Value?.ToString())));
        Assert.Single(keyRows);
        Assert.Single(partnerRows);
        foreach (var secret in new[] { t.Key.ClientSecret, t.ApiKey })
        {
            Assert.DoesNotContain(secret, dumped, StringComparison.Ordinal);
            Assert.DoesNotContain(secret.Split('_')[2], dumped, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task UsageReport_FromGateway_UpdatesLastUsedAtInBatch()
    {
        var t = await keys.NewTenantAsync();
        var second = await keys.IssueKeyAsync(t.WorkspaceId, t.Partner);
        var usedAt = DateTimeOffset.UtcNow.AddMinutes(-1);
        using var response = await keys.Admin.PostAsJsonAsync("internal/import-keys/usage", new
        {
            items = new[] { new { key_id = t.Key.KeyId, used_at = usedAt }, new { key_id = second.KeyId, used_at = usedAt } },
        });
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var list = await Eventually.UntilAsync(
            () => keys.ListKeysAsync(t.WorkspaceId, t.Partner),
            l => l.GetProperty("items").EnumerateArray().All(i => i.GetProperty("last_used_at").ValueKind == JsonValueKind.String),
            TimeSpan.FromSeconds(10), "both keys have last_used_at");
        Assert.All(list.GetProperty("items").EnumerateArray(),
            i => Assert.True(Math.Abs((i.GetProperty("last_used_at").GetDateTimeOffset() - usedAt).TotalMilliseconds) < 1));

        using var bad = await keys.Admin.PostAsync("internal/import-keys/usage", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }

    [Theory]
    [InlineData("PLATFORM_ADMIN_TOKEN")]
    [InlineData("PLATFORM_SERVICE_TOKEN")]
    public async Task Startup_OutsideDevelopmentWithoutAToken_Refuses(string missing)
    {
        var env = new Dictionary<string, string>
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["PLATFORM_ADMIN_TOKEN"] = KeyServiceFixture.AdminToken,
            ["PLATFORM_SERVICE_TOKEN"] = KeyServiceFixture.ServiceToken,
            ["ConnectionStrings__Keys"] = keys.ConnectionString,
            ["Database__MigrateOnStartup"] = "false",
        };
        env[missing] = "";
        var process = await ServiceProcess.StartAsync("KeyService", env, waitUntilReady: false);
        await using (process)
        {
            await process.WaitForExitAsync(TimeSpan.FromSeconds(30));
            Assert.Contains($"{missing} is not set", process.Output, StringComparison.Ordinal);
        }
    }

    [GeneratedRegex("^cbk_[0-9A-Za-z]{12}_[0-9A-Za-z]{32}$")]
    private static partial Regex SecretPattern();

    [GeneratedRegex("^cbp_[0-9A-Za-z]{12}_[0-9A-Za-z]{32}$")]
    private static partial Regex PartnerKeyPattern();
}
