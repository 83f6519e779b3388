using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.SegmentService.Tests.Support;
using CohortBridge.Testing;

namespace CohortBridge.SegmentService.Tests;

/// <summary>One SegmentService process (HTTP + broker + PostgreSQL); each test takes its own workspace.</summary>
public sealed class AudienceApiFixture : IAsyncLifetime
{
    public SegmentServiceHarness Harness { get; } = new();
    public ServiceProcess Segments { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        await Harness.InitializeAsync();
        Segments = await Harness.StartAsync("api");
    }

    public Task DisposeAsync() => Harness.DisposeAsync();
}

public sealed class AudienceApiTests(AudienceApiFixture fixture) : IClassFixture<AudienceApiFixture>
{
    private const string Partner = "tinyclues";
    private SegmentServiceHarness Harness => fixture.Harness;
    private ServiceProcess Segments => fixture.Segments;

    private static string NewWorkspace() => "ws-" + Guid.NewGuid().ToString("N")[..12];

    private static DirectoryUser Identified(int ordinal, string externalId, params string[] devices) => new()
    {
        Ordinal = ordinal, ExternalId = externalId, Identified = true, DeviceIds = devices,
        Aliases = [new UserAlias { AliasName = $"alias-{ordinal}", AliasLabel = "crm" }],
    };

    private static DirectoryUser Anonymous(int ordinal, string device, bool withAlias = false) => new()
    {
        Ordinal = ordinal, DeviceIds = [device],
        Aliases = withAlias ? [new UserAlias { AliasName = $"alias-{ordinal}", AliasLabel = "crm" }] : [],
    };

    /// <summary>Users 0..9 identified (u0..u9), 10..14 anonymous (d10..d14); cohorts a, b, c.</summary>
    private async Task<string> SeedAsync()
    {
        var ws = NewWorkspace();
        var users = Enumerable.Range(0, 10).Select(i => Identified(i, $"u{i}", $"dev-of-u{i}"))
            .Concat(Enumerable.Range(10, 5).Select(i => Anonymous(i, $"d{i}", withAlias: i == 14))).ToArray();
        await Harness.PublishAsync(Harness.Cohorts.Users(ws, users));
        await Harness.PublishAsync(Harness.Cohorts.Change(ws, Partner, "a", name: "Spring buyers", add: [0, 1, 2, 3, 4, 5, 10, 11]));
        await Harness.PublishAsync(Harness.Cohorts.Change(ws, Partner, "b", name: "Newsletter", add: [1, 2, 12]));
        await Harness.PublishAsync(Harness.Cohorts.Change(ws, Partner, "c", name: "Churn risk", add: [2, 3, 4, 10]));
        await SegmentServiceHarness.CohortSizeBecomesAsync(Segments, ws, Partner, "a", 8);
        await SegmentServiceHarness.CohortSizeBecomesAsync(Segments, ws, Partner, "b", 3);
        await SegmentServiceHarness.CohortSizeBecomesAsync(Segments, ws, Partner, "c", 4);
        await Eventually.UntilAsync(
            async () => (await EvaluateAsync(ws, new { not = Includes("a") })).GetProperty("size").GetInt64() == 7,
            because: "the directory lists 15 live users");
        return ws;
    }

    private static object Includes(string cohort) => new { cohort = new { partner = Partner, cohort_id = cohort }, op = "includes" };

    private static object Excludes(string cohort) => new { cohort = new { partner = Partner, cohort_id = cohort }, op = "excludes" };

    /// <summary>a AND (b OR NOT-IN c) = {0..5,10,11} ∩ ({1,2,12} ∪ (live − {2,3,4,10})) = {0,1,2,5,11}.</summary>
    private static object IssueFilter => new { and = new[] { Includes("a"), new { or = new[] { Includes("b"), Excludes("c") } } } };

    private async Task<JsonElement> EvaluateAsync(string ws, object filter)
    {
        using var response = await Segments.Client.PostAsJsonAsync($"workspaces/{ws}/audiences:evaluate", new { filter });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    [Fact]
    public async Task Size_ThreeCohortFilter_CountsMatchingMembers()
    {
        var ws = await SeedAsync();
        var id = await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, IssueFilter);
        var body = await Segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{ws}/segments/{id}/size");
        Assert.Equal(5, body.GetProperty("size").GetInt64());
        Assert.EndsWith("Z", body.GetProperty("evaluated_at").GetString(), StringComparison.Ordinal);

        // A later change to a cohort changes the size.
        await Harness.PublishAsync(Harness.Cohorts.Change(ws, Partner, "a", remove: [0, 1]));
        await SegmentServiceHarness.SizeBecomesAsync(Segments, ws, id, 3);
    }

    [Fact]
    public async Task Check_EachIdentifierKind_FollowsMatchingRules()
    {
        var ws = await SeedAsync();
        var id = await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, IssueFilter);
        async Task<bool> Check(string query) =>
            (await Segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{ws}/segments/{id}/members/check?{query}"))
            .GetProperty("member").GetBoolean();

        Assert.True(await Check("external_id=u1"));
        Assert.False(await Check("external_id=u3"));
        Assert.True(await Check("alias_name=alias-5&alias_label=crm"));
        Assert.True(await Check("device_id=d11"));
        Assert.False(await Check("device_id=d12"));

        // A device_id never matches an identified user (API.md matching rule 3).
        Assert.False(await Check("device_id=dev-of-u1"));
        Assert.False(await Check("external_id=nobody"));

        // A repeated parameter is two identifiers, not one joined with a comma.
        foreach (var bad in new[] { "", "external_id=u1&device_id=d11", "alias_name=x", "external_id=", "external_id=u1&external_id=u3" })
        {
            using var response = await Segments.Client.GetAsync($"workspaces/{ws}/segments/{id}/members/check?{bad}");
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task Members_Stream_WritesOneIdentityPerMemberAsNdjson()
    {
        var ws = await SeedAsync();
        await Harness.PublishAsync(Harness.Cohorts.Change(ws, Partner, "a", add: [14]));
        await SegmentServiceHarness.CohortSizeBecomesAsync(Segments, ws, Partner, "a", 9);
        var id = await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, new { and = new[] { Includes("a"), Excludes("b") } });

        using var response = await Segments.Client.GetAsync($"workspaces/{ws}/segments/{id}/members", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("application/x-ndjson", response.Content.Headers.ContentType?.MediaType);
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(
            ["""{"external_id":"u0"}""", """{"external_id":"u3"}""", """{"external_id":"u4"}""", """{"external_id":"u5"}""",
             """{"device_id":"d10"}""", """{"device_id":"d11"}""", """{"alias_name":"alias-14","alias_label":"crm"}"""],
            lines);
    }

    [Fact]
    public async Task Evaluate_ColonRoute_ReturnsSizeAndSampleWithoutSaving()
    {
        var ws = await SeedAsync();
        var body = await EvaluateAsync(ws, IssueFilter);
        Assert.Equal(5, body.GetProperty("size").GetInt64());
        Assert.Equal(
            ["u0", "u1", "u2", "u5"],
            body.GetProperty("sample").EnumerateArray().Where(e => e.TryGetProperty("external_id", out _))
                .Select(e => e.GetProperty("external_id").GetString()!).ToArray());
        var list = await Segments.Client.GetFromJsonAsync<JsonElement>($"admin/workspaces/{ws}/segments");
        Assert.Equal(0, list.GetProperty("items").GetArrayLength());
    }

    [Fact]
    public async Task Evaluate_UnknownCohortOrBadBody_Returns400NamingIt()
    {
        var ws = await SeedAsync();
        using var response = await Segments.Client.PostAsJsonAsync($"workspaces/{ws}/audiences:evaluate",
            new { filter = new { or = new[] { Includes("a"), Includes("nope") } } });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains("cohort_id 'nope'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);

        using var create = await Segments.Client.PostAsJsonAsync($"admin/workspaces/{ws}/segments",
            new { name = "x", filter = Includes("nope") });
        Assert.Equal(HttpStatusCode.BadRequest, create.StatusCode);

        using var malformed = await Segments.Client.PostAsync($"workspaces/{ws}/audiences:evaluate",
            new StringContent("{not json", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);

        using var badTree = await Segments.Client.PostAsJsonAsync($"workspaces/{ws}/audiences:evaluate", new { filter = new { and = Array.Empty<object>() } });
        Assert.Equal(HttpStatusCode.BadRequest, badTree.StatusCode);
        Assert.Contains("filter.and must be a non-empty array", await badTree.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        // Valid JSON nested past the filter's limit is told so, not that the body is no JSON object.
        var deep = string.Concat(Enumerable.Repeat("{\"not\":", 200)) + """{"cohort":{"partner":"tinyclues","cohort_id":"a"},"op":"includes"}""" + new string('}', 200);
        using var tooDeep = await Segments.Client.PostAsync($"workspaces/{ws}/audiences:evaluate",
            new StringContent($$"""{"filter":{{deep}}}""", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, tooDeep.StatusCode);
        Assert.Contains("a filter may nest at most 32 levels", await tooDeep.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        // Strings that decode to no valid Unicode (lone surrogate escapes, invalid UTF-8) are well-formed JSON tokens
        // that throw when read: they answered 500.
        foreach (var (path, json) in new[]
        {
            ($"workspaces/{ws}/audiences:evaluate", """{"filter":{"cohort":{"partner":"\ud800","cohort_id":"a"},"op":"includes"}}"""),
            ($"workspaces/{ws}/audiences:evaluate", """{"filter":{"\ud800":[]}}"""),
            ($"workspaces/{ws}/audiences:evaluate", """{"filter":{"cohort":{"partner":"tinyclues","cohort_id":"caf#"},"op":"includes"}}"""),
            ($"admin/workspaces/{ws}/segments", """{"name":"x\udc00","filter":{"cohort":{"partner":"tinyclues","cohort_id":"a"},"op":"includes"}}"""),
        })
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(json).Select(b => b == (byte)'#' ? (byte)0xE9 : b).ToArray();
            using var content = new ByteArrayContent(bytes);
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            using var undecodable = await Segments.Client.PostAsync(path, content);
            Assert.Equal((json, HttpStatusCode.BadRequest), (json, undecodable.StatusCode));
            Assert.Contains("strings are valid Unicode", await undecodable.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Archive_CohortInSegment_EvaluatesAsEmptyAndLeavesDropdown()
    {
        var ws = await SeedAsync();
        var id = await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, new { or = new[] { Includes("b"), Includes("c") } });
        await SegmentServiceHarness.SizeBecomesAsync(Segments, ws, id, 6);

        // q matches name or cohort_id, case-insensitively: "u" is in "Spring buyers" and "Churn risk".
        var dropdown = await Segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{ws}/cohorts?q=U");
        Assert.Equal(["Churn risk", "Spring buyers"], dropdown.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("name").GetString()!).ToArray());

        await Harness.PublishAsync(Harness.Cohorts.Change(ws, Partner, "c", archive: true));
        await SegmentServiceHarness.SizeBecomesAsync(Segments, ws, id, 3);
        dropdown = await Segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{ws}/cohorts?q=u");
        var item = Assert.Single(dropdown.GetProperty("items").EnumerateArray());
        Assert.Equal("Spring buyers", item.GetProperty("name").GetString());
        Assert.Equal("a", item.GetProperty("cohort_id").GetString());
        Assert.Equal(8, item.GetProperty("member_count").GetInt64());
        Assert.Equal(JsonValueKind.Null, dropdown.GetProperty("next_cursor").ValueKind);
    }

    [Fact]
    public async Task Segments_Crud_CreatesReadsListsUpdatesAndDeletes()
    {
        var ws = await SeedAsync();
        var id = await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, Includes("a"), "first");
        await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, Includes("b"), "second");
        await SegmentServiceHarness.CreateSegmentAsync(Segments, ws, Includes("c"), "third");

        var read = await Segments.Client.GetFromJsonAsync<JsonElement>($"admin/workspaces/{ws}/segments/{id}");
        Assert.Equal("first", read.GetProperty("name").GetString());
        Assert.EndsWith("Z", read.GetProperty("created_at").GetString(), StringComparison.Ordinal);
        Assert.Equal("a", read.GetProperty("filter").GetProperty("cohort").GetProperty("cohort_id").GetString());

        foreach (var list in new[] { $"admin/workspaces/{ws}/segments", $"workspaces/{ws}/cohorts" })
        {
            using var badLimit = await Segments.Client.GetAsync($"{list}?limit=abc");
            Assert.Equal(HttpStatusCode.BadRequest, badLimit.StatusCode);
            Assert.Equal("limit must be an integer between 1 and 500.",
                (await badLimit.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString());
        }

        var page1 = await Segments.Client.GetFromJsonAsync<JsonElement>($"admin/workspaces/{ws}/segments?limit=2");
        Assert.Equal(2, page1.GetProperty("items").GetArrayLength());
        var cursor = page1.GetProperty("next_cursor").GetString();
        var page2 = await Segments.Client.GetFromJsonAsync<JsonElement>($"admin/workspaces/{ws}/segments?limit=2&cursor={cursor}");
        Assert.Equal(1, page2.GetProperty("items").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, page2.GetProperty("next_cursor").ValueKind);

        using var put = await Segments.Client.PutAsJsonAsync($"admin/workspaces/{ws}/segments/{id}", new { name = "renamed", filter = Includes("b") });
        Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        await SegmentServiceHarness.SizeBecomesAsync(Segments, ws, id, 3);

        using var delete = await Segments.Client.DeleteAsync($"admin/workspaces/{ws}/segments/{id}");
        Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
        using var gone = await Segments.Client.GetAsync($"workspaces/{ws}/segments/{id}/size");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        using var otherWorkspace = await Segments.Client.GetAsync($"admin/workspaces/{NewWorkspace()}/segments/{id}");
        Assert.Equal(HttpStatusCode.NotFound, otherWorkspace.StatusCode);
        using var badName = await Segments.Client.PostAsJsonAsync($"admin/workspaces/{ws}/segments", new { name = "", filter = Includes("a") });
        Assert.Equal(HttpStatusCode.BadRequest, badName.StatusCode);
        using var nulName = await Segments.Client.PostAsJsonAsync($"admin/workspaces/{ws}/segments", new { name = "a\0b", filter = Includes("a") });
        Assert.Equal(HttpStatusCode.BadRequest, nulName.StatusCode);
        Assert.Contains("without U+0000", await nulName.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using var badWorkspace = await Segments.Client.GetAsync("admin/workspaces/Not_Valid/segments");
        Assert.Equal(HttpStatusCode.BadRequest, badWorkspace.StatusCode);
    }

    [Fact]
    public async Task Endpoints_WithoutAdminToken_Return401()
    {
        using var anonymous = new HttpClient { BaseAddress = Segments.BaseAddress };
        foreach (var path in new[] { "admin/workspaces/w1/segments", $"workspaces/w1/segments/{Guid.NewGuid()}/size", "workspaces/w1/cohorts" })
        {
            using var response = await anonymous.GetAsync(path);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }
    }

    [Fact]
    public async Task ServiceToken_OpensAudienceReadsButNoAdminApi()
    {
        var ws = await SeedAsync();
        using var campaign = new HttpClient { BaseAddress = Segments.BaseAddress };
        campaign.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", SegmentServiceHarness.ServiceToken);

        using var cohorts = await campaign.GetAsync($"workspaces/{ws}/cohorts");
        using var evaluate = await campaign.PostAsJsonAsync($"workspaces/{ws}/audiences:evaluate", new { filter = IssueFilter });
        using var admin = await campaign.GetAsync($"admin/workspaces/{ws}/segments");

        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (cohorts.StatusCode, evaluate.StatusCode));
        Assert.Equal(HttpStatusCode.Unauthorized, admin.StatusCode);
    }

    [Fact]
    public async Task Metrics_AfterEvaluations_ExposeLatencyAndLag()
    {
        var ws = await SeedAsync();
        await EvaluateAsync(ws, IssueFilter);
        var metrics = await Segments.Client.GetStringAsync("metrics");
        Assert.Contains("cohortbridge_segments_evaluation_duration_seconds_bucket", metrics, StringComparison.Ordinal);
        Assert.Contains("cohortbridge_segments_projection_versions_behind", metrics, StringComparison.Ordinal);
        Assert.Contains("cohortbridge_segments_projection_event_lag_seconds", metrics, StringComparison.Ordinal);
    }
}
