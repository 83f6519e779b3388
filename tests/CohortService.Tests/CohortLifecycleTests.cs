using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using Dapper;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>Versions, redelivery, names, archive, user deletion and the admin/internal read APIs.</summary>
[Collection("cohort-service")]
public sealed class CohortLifecycleTests(SharedCohortService host)
{
    private static CohortExportReceived Name(string ws, string cohortId, string name) => new()
    {
        ImportId = Guid.NewGuid(),
        WorkspaceId = ws,
        Partner = "tinyclues",
        CohortId = cohortId,
        Kind = CohortExportKind.Name,
        Name = name,
        CreatedAt = DateTimeOffset.Parse("2026-11-22T19:20:30+01:00", System.Globalization.CultureInfo.InvariantCulture),
        OccurredAt = DateTimeOffset.UtcNow,
    };

    private static CohortExportReceived Archive(string ws, string cohortId) => new()
    {
        ImportId = Guid.NewGuid(),
        WorkspaceId = ws,
        Partner = "tinyclues",
        CohortId = cohortId,
        Kind = CohortExportKind.Archive,
        Archive = true,
        OccurredAt = DateTimeOffset.UtcNow,
    };

    [Fact]
    public async Task Import_SameMessageDeliveredTwice_AppliesOnceAndPublishesStoredEventAgain()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        var message = Changes(ws, "twice", Add("u1", "u2"));

        await host.ImportAsync(message);
        await host.WaitForUpdateAsync(ws, "twice", 1);
        await host.Bus.Publish(message);
        await Eventually.UntilAsync(() => Task.FromResult(host.UpdatesOf(ws, "twice").Count == 2), because: "the stored event is published again");

        var updates = host.UpdatesOf(ws, "twice");
        Assert.All(updates, u => Assert.Equal(1, u.Version));
        Assert.All(updates, u => Assert.Equal(2, u.MemberCount));
        var (members, version, _) = await host.MembersAsync(ws, "twice");
        Assert.Equal([0, 1], members);
        Assert.Equal(1, version);
        await using var conn = await host.OpenAsync();
        Assert.Equal(1, await conn.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM cohort_changes c JOIN cohorts k ON k.id = c.cohort_pk WHERE k.workspace_id = @ws", new { ws }));
    }

    [Fact]
    public async Task Import_EmptyChanges_CompletedWithZeroCountsAndNoCohort()
    {
        var ws = NewWorkspace();
        var status = await host.ImportAsync(Changes(ws, "credentials-check"));
        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(0, status.GetProperty("received").GetInt64());
        Assert.Equal(JsonValueKind.Null, status.GetProperty("cohort_version").ValueKind);
        using var response = await host.Admin.GetAsync($"internal/workspaces/{ws}/cohorts/tinyclues/credentials-check/members");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [Fact]
    public async Task Name_CreateThenRename_EachBumpsVersionAndPublishes()
    {
        var ws = NewWorkspace();
        await host.ImportAsync(Name(ws, "spring-sale", "Spring sale"));
        await host.ImportAsync(Name(ws, "spring-sale", "Spring sale"));   // same name: no change
        var renamed = await host.ImportAsync(Name(ws, "spring-sale", "Spring sale 2026"));

        Assert.Equal(2, renamed.GetProperty("cohort_version").GetInt64());
        Assert.Equal("Spring sale", (await host.WaitForUpdateAsync(ws, "spring-sale", 1)).CohortName);
        var v2 = await host.WaitForUpdateAsync(ws, "spring-sale", 2);
        Assert.Equal("Spring sale 2026", v2.CohortName);
        Assert.Equal(0, v2.AddedCount);
        var changes = await host.GetJsonAsync(host.Admin, $"internal/workspaces/{ws}/cohorts/tinyclues/spring-sale/changes?after=0");
        Assert.Equal(2, changes.GetProperty("current_version").GetInt64());
        Assert.True(changes.GetProperty("complete").GetBoolean());
        Assert.Equal(["Spring sale", "Spring sale 2026"],
            changes.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task Archive_Cohort_EmptiesItHidesItAndPublishesArchived()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        await host.ImportAsync(Name(ws, "old", "Old cohort"));
        await host.ImportAsync(Changes(ws, "old", Add("u1", "u2")));
        var archived = await host.ImportAsync(Archive(ws, "old"));

        Assert.Equal(3, archived.GetProperty("cohort_version").GetInt64());
        Assert.Equal(2, archived.GetProperty("removed").GetInt64());
        var evt = await host.WaitForUpdateAsync(ws, "old", 3);
        Assert.True(evt.Archived);
        Assert.Equal(0, evt.MemberCount);
        Assert.Equal(2, evt.RemovedCount);
        var (members, version, isArchived) = await host.MembersAsync(ws, "old");
        Assert.Empty(members);
        Assert.Equal(3, version);
        Assert.True(isArchived);
        var list = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts");
        Assert.Equal(0, list.GetProperty("items").GetArrayLength());
        var detail = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts/tinyclues/old");
        Assert.True(detail.GetProperty("archived").GetBoolean());
    }

    [Fact]
    public async Task DeleteUser_InSeveralCohorts_LeavesEachWithNewVersionAndEvent()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"stays"}""", """{"external_id":"leaves","device_ids":["d1"]}""");
        await host.ImportAsync(Changes(ws, "c1", Add("stays", "leaves")));
        await host.ImportAsync(Changes(ws, "c2", Add("leaves")));
        await host.ImportAsync(Changes(ws, "c3", Add("stays")));

        using var response = await host.Admin.DeleteAsync($"admin/workspaces/{ws}/users/leaves");
        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);

        var c1 = await host.WaitForUpdateAsync(ws, "c1", 2);
        var c2 = await host.WaitForUpdateAsync(ws, "c2", 2);
        Assert.Equal([1], c1.Removed!.Select(r => r.Ordinal));
        Assert.Equal("leaves", c1.Removed![0].ExternalId);
        Assert.Equal(1, c1.MemberCount);
        Assert.Equal(0, c2.MemberCount);
        Assert.Equal(1, (await host.MembersAsync(ws, "c3")).Version);
        Assert.Equal(new[] { 0 }, (await host.MembersAsync(ws, "c1")).Ordinals);
        var directoryChange = await Eventually.UntilAsync(
            () => Task.FromResult(host.DirectoryChanges.FirstOrDefault(d => d.WorkspaceId == ws && d.Users.Any(u => u.Deleted))),
            d => d is not null, because: "UserDirectoryChanged with the deletion");
        Assert.Equal(1, directoryChange!.Users.Single(u => u.Deleted).Ordinal);

        // The deleted user matches nothing any more; deleting it again is 404.
        var status = await host.ImportAsync(Changes(ws, "c3", Add("leaves")));
        Assert.Equal(0, status.GetProperty("matched").GetInt64());
        using var again = await host.Admin.DeleteAsync($"admin/workspaces/{ws}/users/leaves");
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
    }

    [Fact]
    public async Task Import_LargeChange_SetsMustRereadInsteadOfListingUsers()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, [.. Enumerable.Range(0, 60).Select(i => $$"""{"external_id":"big-{{i}}"}""")]);
        await host.ImportAsync(Changes(ws, "big", Add([.. Enumerable.Range(0, 60).Select(i => $"big-{i}")])));
        var evt = await host.WaitForUpdateAsync(ws, "big", 1);
        Assert.True(evt.MustReread);
        Assert.Null(evt.Added);
        Assert.Equal(60, evt.AddedCount);
        var changes = await host.GetJsonAsync(host.Admin, $"internal/workspaces/{ws}/cohorts/tinyclues/big/changes?after=0");
        Assert.Equal(60, changes.GetProperty("items")[0].GetProperty("added").GetArrayLength());
    }

    [Fact]
    public async Task InternalApi_CohortIdWithSlashSpaceAndUnicode_RoundTrips()
    {
        var ws = NewWorkspace();
        const string cohortId = "promo/2026 été %2F";
        await host.UpsertAsync(ws, """{"external_id":"u"}""");
        await host.ImportAsync(Changes(ws, cohortId, Add("u")));

        var (members, version, _) = await host.MembersAsync(ws, cohortId);
        Assert.Equal([0], members);
        Assert.Equal(1, version);
        var detail = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts/tinyclues/{Path(cohortId)}");
        Assert.Equal(cohortId, detail.GetProperty("cohort_id").GetString());
        var all = await host.Admin.GetStringAsync("internal/cohorts");
        Assert.Contains(all.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement),
            e => e.GetProperty("workspace_id").GetString() == ws && e.GetProperty("cohort_id").GetString() == cohortId
                 && e.GetProperty("member_count").GetInt64() == 1);
        var workspaces = await host.GetJsonAsync(host.Admin, "internal/workspaces");
        Assert.Contains(ws, workspaces.GetProperty("items").EnumerateArray().Select(i => i.GetString()));
        using var missing = await host.Admin.GetAsync($"internal/workspaces/{ws}/cohorts/tinyclues/nope/changes?after=0");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        using var unknownImport = await host.Admin.GetAsync($"internal/workspaces/{ws}/imports/{Guid.NewGuid()}");
        Assert.Equal(HttpStatusCode.NotFound, unknownImport.StatusCode);
    }

    [Fact]
    public async Task AdminList_SearchByPartOfNameOrId_IsCaseInsensitiveAndPaginates()
    {
        var ws = NewWorkspace();
        await host.ImportAsync(Name(ws, "c-1", "Black Friday ÉTÉ"));
        await host.ImportAsync(Name(ws, "c-2", "Newsletter"));
        await host.ImportAsync(Name(ws, "FRIDAY-late", "Late"));
        await host.ImportAsync(Name(ws, "c-4", "Other"));

        var found = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts?q=friday");
        Assert.Equal(["c-1", "FRIDAY-late"], found.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("cohort_id").GetString()));
        var unicode = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts?q=%C3%A9t%C3%A9");
        Assert.Single(unicode.GetProperty("items").EnumerateArray());

        var page1 = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts?limit=3");
        Assert.Equal(3, page1.GetProperty("items").GetArrayLength());
        var cursor = page1.GetProperty("next_cursor").GetString();
        var page2 = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts?limit=3&cursor={cursor}");
        Assert.Equal(["c-4"], page2.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("cohort_id").GetString()));
        Assert.Equal(JsonValueKind.Null, page2.GetProperty("next_cursor").ValueKind);
        var item = page1.GetProperty("items")[0];
        Assert.Equal("completed", item.GetProperty("last_import").GetProperty("status").GetString());

        Assert.EndsWith("Z", item.GetProperty("created_at").GetString(), StringComparison.Ordinal);
        Assert.EndsWith("Z", item.GetProperty("last_import").GetProperty("accepted_at").GetString(), StringComparison.Ordinal);

        using var badLimit = await host.Admin.GetAsync($"admin/workspaces/{ws}/cohorts?limit=abc");
        Assert.Equal(HttpStatusCode.BadRequest, badLimit.StatusCode);
        Assert.Equal("limit must be an integer between 1 and 500.", (await badLimit.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString());
        using var badCursor = await host.Admin.GetAsync($"admin/workspaces/{ws}/cohorts?cursor=%21%21");
        Assert.Equal(HttpStatusCode.BadRequest, badCursor.StatusCode);
        Assert.Equal("application/problem+json", badCursor.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task AdminDetail_Cohort_ShowsRecentImportsWithMatchCounts()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"u1"}""");
        await host.ImportAsync(Changes(ws, "detail", Add("u1", "ghost")));
        var detail = await host.GetJsonAsync(host.Admin, $"admin/workspaces/{ws}/cohorts/tinyclues/detail");
        var import = detail.GetProperty("recent_imports")[0];
        Assert.Equal(2, import.GetProperty("received").GetInt64());
        Assert.Equal(1, import.GetProperty("matched").GetInt64());
        Assert.Equal(0.5, import.GetProperty("match_rate").GetDouble());
        Assert.Equal(1, detail.GetProperty("member_count").GetInt64());
    }

    [Fact]
    public async Task AdminAndInternalApi_WithoutToken_Returns401()
    {
        // Internal endpoints serve directories and members (personal data) to the other services, which send the token.
        var ws = NewWorkspace();
        foreach (var path in new[] { $"admin/workspaces/{ws}/cohorts", "internal/workspaces", "internal/cohorts", $"internal/workspaces/{ws}/directory" })
        {
            using var response = await host.Service.Client.GetAsync(path);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }
    }
}

/// <summary>
/// In Development (as `make up` runs the services) the framework throws for a query value it cannot bind; the shared
/// exception handler must answer the client's 400 for it, not a 500.
/// </summary>
public sealed class DevelopmentEnvironmentTests : IAsyncLifetime
{
    private readonly CohortServiceHost _host = new() { Overrides = { ["ASPNETCORE_ENVIRONMENT"] = "Development" } };

    public Task InitializeAsync() => _host.StartAsync();

    public Task DisposeAsync() => _host.DisposeAsync().AsTask();

    [Fact]
    public async Task QueryValueOfWrongType_InDevelopment_Returns400()
    {
        var ws = NewWorkspace();
        await _host.ImportAsync(Changes(ws, "typed", Add()));

        using var response = await _host.Admin.GetAsync($"internal/workspaces/{ws}/cohorts/tinyclues/typed/changes?after=abc");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }
}

/// <summary>The shared exception handler's net under the validators, fed the error PostgreSQL itself raises.</summary>
public sealed class ClientErrorExceptionHandlerTests
{
    [Fact]
    public async Task TextWithNulCharacter_PostgresRefusal_Answers400Problem()
    {
        await using var dataSource = await MigratedDataSourceAsync("cohorts_nul");
        await using var conn = await dataSource.OpenConnectionAsync();
        var refusal = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => conn.ExecuteScalarAsync<string>("SELECT @t::text", new { t = "a\0b" }));
        var other = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => conn.ExecuteScalarAsync<int>("SELECT 1 / 0"));

        var (handled, status, body) = await HandleAsync(refusal);
        var (otherHandled, _, _) = await HandleAsync(other);

        Assert.Equal((true, 400), (handled, status));
        Assert.Equal("Text values must not contain the character U+0000.", JsonDocument.Parse(body).RootElement.GetProperty("detail").GetString());
        Assert.False(otherHandled);
    }

    private static async Task<(bool Handled, int Status, string Body)> HandleAsync(Exception exception)
    {
        var services = new ServiceCollection().AddLogging().AddProblemDetails().BuildServiceProvider();
        var http = new DefaultHttpContext { RequestServices = services };
        http.Response.Body = new MemoryStream();
        var handler = new ServiceDefaults.ClientErrorExceptionHandler(services.GetRequiredService<IProblemDetailsService>());

        var handled = await handler.TryHandleAsync(http, exception, CancellationToken.None);

        return (handled, http.Response.StatusCode, System.Text.Encoding.UTF8.GetString(((MemoryStream)http.Response.Body).ToArray()));
    }
}
