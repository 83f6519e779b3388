using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using CohortBridge.Testing;
using Dapper;
using Npgsql;
using static CohortBridge.ImportGateway.Tests.PartnerHttp;
using static CohortBridge.ImportGateway.Tests.SnapshotHttp;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>
/// KeyService, ImportGateway (chunks of 100 identifiers) and CohortService as real processes on a private vhost with
/// fresh databases: a snapshot goes through HTTP, the broker and PostgreSQL, and is read back through the gateway's
/// import status and CohortService's internal members API.
/// </summary>
public sealed class SnapshotPlatform : IAsyncLifetime
{
    public const string Partner = GatewayFixture.Partner;

    public Infrastructure Infrastructure { get; private set; } = null!;
    public ServiceProcess Keys { get; private set; } = null!;
    public ServiceProcess Gateway { get; private set; } = null!;
    public ServiceProcess Cohorts { get; private set; } = null!;
    public string Workspace { get; } = "ws-" + Guid.NewGuid().ToString("N")[..8];
    public string PartnerApiKey { get; private set; } = "";
    public string ClientSecret { get; private set; } = "";
    public string CohortsConnectionString { get; private set; } = "";

    private string _vhost = "";
    private string[] _databases = [];

    public async Task InitializeAsync()
    {
        Infrastructure = await Infrastructure.GetAsync();
        _vhost = Infrastructure.UniqueName("snap");
        await Infrastructure.CreateVirtualHostAsync(_vhost);
        var suffix = Guid.NewGuid().ToString("N")[..10];
        _databases = [$"keys_{suffix}", $"gateway_{suffix}", $"cohorts_{suffix}"];
        CohortsConnectionString = Infrastructure.ConnectionStringFor(_databases[2]);
        var (keysPort, cohortsPort) = (ServiceProcess.FreePort(), ServiceProcess.FreePort());
        Dictionary<string, string> Env(params (string Key, string Value)[] extra)
        {
            var env = new Dictionary<string, string>
            {
                ["PLATFORM_ADMIN_TOKEN"] = GatewayFixture.AdminToken,
                ["PLATFORM_SERVICE_TOKEN"] = PlatformProcesses.ServiceToken,
                ["KeyService__BaseUrl"] = $"http://127.0.0.1:{keysPort}/",
                ["CohortService__BaseUrl"] = $"http://127.0.0.1:{cohortsPort}/",
                ["Gateway__PublicBaseUrl"] = "http://gateway.example.test/",
            }.WithBroker(Infrastructure, _vhost);
            foreach (var (k, v) in extra)
            {
                env[k] = v;
            }

            return env;
        }

        Task<ServiceProcess>[] starts =
        [
            ServiceProcess.StartAsync("KeyService", Env(("ConnectionStrings__Keys", Infrastructure.ConnectionStringFor(_databases[0]))), keysPort),
            ServiceProcess.StartAsync("CohortService", Env(("ConnectionStrings__Cohorts", CohortsConnectionString)), cohortsPort),
            ServiceProcess.StartAsync("ImportGateway", Env(
                ("ConnectionStrings__Gateway", Infrastructure.ConnectionStringFor(_databases[1])),
                ("Gateway__SnapshotChunkSize", "100"))),
        ];
        try
        {
            var started = await Task.WhenAll(starts);
            (Keys, Cohorts, Gateway) = (started[0], started[1], started[2]);
        }
        catch
        {
            // Stop the processes that did start: nothing else would (the fixture's DisposeAsync does not know them).
            foreach (var start in starts.Where(s => s.IsCompletedSuccessfully))
            {
                await start.Result.DisposeAsync();
            }

            throw;
        }

        using var admin = AdminClient(Keys);
        using (var r = await admin.PostAsJsonAsync("admin/partners", new { partner = Partner, display_name = Partner }))
        {
            r.EnsureSuccessStatusCode();
            PartnerApiKey = (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("partner_api_key").GetString()!;
        }

        (await admin.PostAsJsonAsync("admin/workspaces", new { workspace_id = Workspace, name = Workspace })).EnsureSuccessStatusCode();
        using (var r = await admin.PostAsync($"admin/workspaces/{Workspace}/partners/{Partner}/import-keys", null))
        {
            r.EnsureSuccessStatusCode();
            ClientSecret = (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("client_secret").GetString()!;
        }
    }

    public static HttpClient AdminClient(ServiceProcess service)
    {
        var client = new HttpClient { BaseAddress = service.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", GatewayFixture.AdminToken);
        return client;
    }

    public async Task UpsertUsersAsync(IEnumerable<string> lines)
    {
        using var admin = AdminClient(Cohorts);
        using var content = new StringContent(string.Join("\n", lines) + "\n", Encoding.UTF8, "application/x-ndjson");
        using var r = await admin.PostAsync($"admin/workspaces/{Workspace}/users:bulk", content);
        Assert.True(r.IsSuccessStatusCode, await r.Content.ReadAsStringAsync());
    }

    public Task<Reply> PutAsync(string cohortId, HttpContent content) =>
        SendAsync(Gateway.Client, Put(cohortId, content, PartnerApiKey, ClientSecret));

    /// <summary>The import status through the gateway, once it is completed or failed.</summary>
    public async Task<JsonElement> WaitForImportAsync(Guid importId) =>
        await Eventually.UntilAsync(async () =>
        {
            using var request = WithCredentials(HttpMethod.Get, $"partners/{Partner}/imports/{importId}", PartnerApiKey, ClientSecret);
            var reply = await SendAsync(Gateway.Client, request);
            return reply.Status == HttpStatusCode.OK ? reply.Json.Clone() : default;
        }, s => s.ValueKind == JsonValueKind.Object && s.GetProperty("status").GetString() is "completed" or "failed",
        TimeSpan.FromSeconds(60), $"import {importId} finishes");

    /// <summary>Members (by external id) and version of a cohort, through CohortService's internal API and directory.</summary>
    public async Task<(HashSet<string> Members, long Version)> MembersAsync(string cohortId)
    {
        using var admin = AdminClient(Cohorts);
        var directory = new Dictionary<int, string>();
        foreach (var line in (await admin.GetStringAsync($"internal/workspaces/{Workspace}/directory")).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var e = JsonDocument.Parse(line).RootElement;
            directory[e.GetProperty("ordinal").GetInt32()] = e.GetProperty("external_id").GetString() ?? "#" + e.GetProperty("ordinal").GetInt32();
        }

        using var r = await admin.GetAsync($"internal/workspaces/{Workspace}/cohorts/{Partner}/{Uri.EscapeDataString(cohortId)}/members");
        if (r.StatusCode == HttpStatusCode.NotFound)
        {
            return ([], 0);
        }

        r.EnsureSuccessStatusCode();
        var bytes = await r.Content.ReadAsByteArrayAsync();
        var members = Enumerable.Range(0, bytes.Length / 4).Select(i => directory[BitConverter.ToInt32(bytes, i * 4)]).ToHashSet();
        return (members, long.Parse(r.Headers.GetValues("X-Cohort-Version").Single(), CultureInfo.InvariantCulture));
    }

    /// <summary>The import CohortService has for a cohort (it appears with the first chunk), or null.</summary>
    public async Task<(Guid ImportId, long Received)?> CohortServiceImportAsync(string cohortId)
    {
        await using var conn = new NpgsqlConnection(CohortsConnectionString);
        var row = await conn.QueryFirstOrDefaultAsync<(Guid, long)?>(
            // A snapshot still staging counts its identifiers on its chunk rows (snapshot_progress).
            """
            SELECT i.import_id, i.received + coalesce((SELECT p.identifiers FROM snapshot_progress p WHERE p.import_id = i.import_id), 0)
            FROM imports i WHERE i.workspace_id = @ws AND i.cohort_id = @cohortId ORDER BY i.started_at DESC LIMIT 1
            """,
            new { ws = Workspace, cohortId });
        return row;
    }

    public async Task DisposeAsync()
    {
        foreach (var p in new[] { Gateway, Cohorts, Keys })
        {
            if (p is not null)
            {
                await p.DisposeAsync();
            }
        }

        if (Infrastructure is not null)
        {
            await Infrastructure.DeleteVirtualHostAsync(_vhost);
            await using var conn = new NpgsqlConnection(Infrastructure.PostgresConnectionString);
            await conn.OpenAsync();
            foreach (var db in _databases)
            {
                await conn.ExecuteAsync($"DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
            }
        }
    }
}

/// <summary>Snapshots end to end: HTTP → gateway → broker → CohortService → PostgreSQL, read back over HTTP.</summary>
public sealed class SnapshotEndToEndTests(SnapshotPlatform platform) : IClassFixture<SnapshotPlatform>
{
    private static IEnumerable<string> NdJson(IEnumerable<int> users) => users.Select(i => $$"""{"external_id":"e{{i}}"}""");

    private async Task EnsureUsersAsync()
    {
        await platform.UpsertUsersAsync(Enumerable.Range(0, 300).Select(i => $$"""{"external_id":"e{{i}}","aliases":[{"alias_name":"crm","alias_label":"c{{i}}"}]}"""));
    }

    [Fact]
    public async Task Snapshot_NdJsonInSeveralChunks_ReplacesMembershipExactly()
    {
        await EnsureUsersAsync();
        var first = await platform.PutAsync("weekly", new StreamedLines(NdJson(Enumerable.Range(0, 150)), "application/x-ndjson").Typed());
        Assert.Equal(HttpStatusCode.Accepted, first.Status);
        Assert.Equal("completed", (await platform.WaitForImportAsync(first.ImportId)).GetProperty("status").GetString());

        var lines = NdJson(Enumerable.Range(100, 200)).Concat(["{\"external_id\": 7}", "garbage", """{"external_id":"stranger"}"""]);
        var second = await platform.PutAsync("weekly", new StreamedLines(lines, "application/x-ndjson").Typed());
        Assert.Equal(HttpStatusCode.Accepted, second.Status);
        var status = await platform.WaitForImportAsync(second.ImportId);

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal("weekly", status.GetProperty("cohort_id").GetString());
        Assert.Equal(203, status.GetProperty("received").GetInt64());
        Assert.Equal(200, status.GetProperty("matched").GetInt64());
        Assert.Equal(150, status.GetProperty("added").GetInt64());
        Assert.Equal(100, status.GetProperty("removed").GetInt64());
        Assert.Equal(2, status.GetProperty("unmatched").GetProperty("invalid_identifier").GetInt64());
        Assert.Equal(1, status.GetProperty("unmatched").GetProperty("unknown_external_id").GetInt64());
        Assert.Equal(2, status.GetProperty("cohort_version").GetInt64());
        var (members, version) = await platform.MembersAsync("weekly");
        Assert.Equal(2, version);
        Assert.True(members.SetEquals(Enumerable.Range(100, 200).Select(i => $"e{i}")));
    }

    [Fact]
    public async Task Snapshot_CsvAliases_ReplacesMembership()
    {
        await EnsureUsersAsync();
        var csv = "alias_name,alias_label\n" + string.Join("\n", Enumerable.Range(0, 120).Select(i => $"crm,c{i}")) + "\ncrm,\n";

        var reply = await platform.PutAsync("by-alias", Body(csv, "text/csv"));
        var status = await platform.WaitForImportAsync(reply.ImportId);

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        Assert.Equal(121, status.GetProperty("received").GetInt64());
        Assert.Equal(120, status.GetProperty("matched").GetInt64());
        Assert.Equal(1, status.GetProperty("unmatched").GetProperty("invalid_identifier").GetInt64());
        Assert.Equal(120, (await platform.MembersAsync("by-alias")).Members.Count);
    }

    [Fact]
    public async Task Snapshot_CsvCellWithNulCharacter_CountedInvalid_RestApplied()
    {
        await EnsureUsersAsync();
        // PostgreSQL's text cannot hold U+0000: staging such a cell once failed the whole snapshot.
        var reply = await platform.PutAsync("nul-cell", Body("external_id\ne1\ne\u00002\ne3\n", "text/csv"));
        var status = await platform.WaitForImportAsync(reply.ImportId);

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal((3L, 2L), (status.GetProperty("received").GetInt64(), status.GetProperty("matched").GetInt64()));
        Assert.Equal(1, status.GetProperty("unmatched").GetProperty("invalid_identifier").GetInt64());
        Assert.Equal(["e\uFFFD2"], status.GetProperty("unmatched_sample").EnumerateArray().Select(e => e.GetString()));
        Assert.True((await platform.MembersAsync("nul-cell")).Members.SetEquals(["e1", "e3"]));
    }

    [Fact]
    public async Task Snapshot_MalformedCsvHeader_Returns400AndChangesNothing()
    {
        await EnsureUsersAsync();
        var seeded = await platform.PutAsync("guarded", Body("external_id\ne1\ne2\n", "text/csv"));
        await platform.WaitForImportAsync(seeded.ImportId);

        var reply = await platform.PutAsync("guarded", Body("user,label\ne3,x\n", "text/csv"));

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        var (members, version) = await platform.MembersAsync("guarded");
        Assert.Equal(1, version);
        Assert.True(members.SetEquals(["e1", "e2"]));
    }

    [Fact]
    public async Task Snapshot_ClientDisconnectsMidBody_FailsAndChangesNothing()
    {
        await EnsureUsersAsync();
        var seeded = await platform.PutAsync("fragile", Body("external_id\ne1\n", "text/csv"));
        await platform.WaitForImportAsync(seeded.ImportId);
        (Guid ImportId, long Received)? staged = null;
        var content = new StreamedLines(NdJson(Enumerable.Range(0, 250)), "application/x-ndjson", async () =>
            staged = await Eventually.UntilAsync(() => platform.CohortServiceImportAsync("fragile"),
                i => i is { } x && x.ImportId != seeded.ImportId && x.Received > 0, because: "chunks staged before the break"))
            .Typed();

        await Assert.ThrowsAnyAsync<HttpRequestException>(() => platform.PutAsync("fragile", content));
        var status = await platform.WaitForImportAsync(staged!.Value.ImportId);

        Assert.Equal("failed", status.GetProperty("status").GetString());
        Assert.False(string.IsNullOrEmpty(status.GetProperty("error").GetString()));
        var (members, version) = await platform.MembersAsync("fragile");
        Assert.Equal(1, version);
        Assert.True(members.SetEquals(["e1"]));
    }
}
