using System.Net;
using System.Text;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.Testing;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>The user directory: bulk NDJSON upsert, identification, ordinals, UserDirectoryChanged, the feed message.</summary>
[Collection("cohort-service")]
public sealed class DirectoryTests(SharedCohortService host)
{
    [Fact]
    public async Task BulkUpsert_LineWithNulCharacter_RejectedAlone()
    {
        // PostgreSQL's text cannot hold U+0000: such a line once failed the whole batch with a 500.
        var ws = NewWorkspace();
        var result = await host.UpsertAsync(ws,
            """{"external_id":"ok"}""", """{"external_id":"a\u0000b"}""", """{"device_ids":["d\u0000"]}""");

        Assert.Equal((1, 2), (result.GetProperty("upserted").GetInt32(), result.GetProperty("rejected").GetInt32()));
        Assert.Equal([2, 3], result.GetProperty("errors").EnumerateArray().Select(e => e.GetProperty("line").GetInt32()));
        Assert.Equal(["ok"], (await host.OrdinalsAsync(ws)).Keys);
    }

    [Fact]
    public async Task BulkUpsert_MixedLines_RejectsBadLinesWithLineNumbersAndKeepsGoodOnes()
    {
        var ws = NewWorkspace();
        var result = await host.UpsertAsync(ws,
            """{"external_id":"a","aliases":[{"alias_name":"crm","alias_label":"1"}],"device_ids":["d-a"]}""",
            "not json",
            """{"device_ids":["anon-1"]}""",
            """{"external_id":""}""",
            """{}""",
            """{"device_ids":[42]}""",
            """{"external_id":"b"}""");

        Assert.Equal(3, result.GetProperty("upserted").GetInt64());
        Assert.Equal(4, result.GetProperty("rejected").GetInt64());
        Assert.Equal([2, 4, 5, 6], result.GetProperty("errors").EnumerateArray().Select(e => e.GetProperty("line").GetInt32()));
        Assert.All(result.GetProperty("errors").EnumerateArray(), e => Assert.False(string.IsNullOrEmpty(e.GetProperty("error").GetString())));
        var ordinals = await host.OrdinalsAsync(ws);
        Assert.Equal(0, ordinals["a"]);
        Assert.Equal(2, ordinals["b"]); // dense per workspace, in line order; the anonymous user has 1
    }

    [Fact]
    public async Task BulkUpsert_SameProfileAgain_ChangesNothingAndKeepsOrdinal()
    {
        var ws = NewWorkspace();
        const string line = """{"external_id":"same","aliases":[{"alias_name":"n","alias_label":"l"}]}""";
        await host.UpsertAsync(ws, line);
        var again = await host.UpsertAsync(ws, line, """{"external_id":"same","device_ids":["extra"]}""");
        Assert.Equal(2, again.GetProperty("upserted").GetInt64());
        var text = await host.Admin.GetStringAsync($"internal/workspaces/{ws}/directory");
        var user = JsonDocument.Parse(text.Trim()).RootElement;
        Assert.Equal(0, user.GetProperty("ordinal").GetInt32());
        Assert.Equal(["extra"], user.GetProperty("device_ids").EnumerateArray().Select(d => d.GetString()));
        Assert.Equal("n", user.GetProperty("aliases")[0].GetProperty("alias_name").GetString());
        Assert.True(user.GetProperty("identified").GetBoolean());
    }

    [Fact]
    public async Task BulkUpsert_ExternalIdOnAnonymousProfile_IdentifiesItAndPublishesChange()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"aliases":[{"alias_name":"email","alias_label":"x@y"}],"device_ids":["phone"]}""");
        var result = await host.UpsertAsync(ws, """{"external_id":"now-known","aliases":[{"alias_name":"email","alias_label":"x@y"}]}""");
        Assert.Equal(1, result.GetProperty("identified").GetInt64());

        var change = await Eventually.UntilAsync(
            () => Task.FromResult(host.DirectoryChanges.Where(d => d.WorkspaceId == ws).SelectMany(d => d.Users)
                .FirstOrDefault(u => u.Identified)),
            u => u is not null, because: "UserDirectoryChanged for the identification");
        Assert.Equal(0, change!.Ordinal);
        Assert.Equal("now-known", change.ExternalId);
        Assert.Equal(["phone"], change.DeviceIds);
    }

    [Fact]
    public async Task DirectoryEventsAndStream_CarryTheDirectoryVersionTheyWereReadAt()
    {
        // Every directory write moves the workspace's version on; each event and the whole-directory read carry the
        // version read before their users, so that SegmentService can tell an older identity from a newer one.
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"first"}""");
        await host.UpsertAsync(ws, """{"external_id":"second"}""");
        using (var delete = await host.Admin.DeleteAsync($"admin/workspaces/{ws}/users/first"))
        {
            Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
        }

        var deletion = await Eventually.UntilAsync(
            () => Task.FromResult(host.DirectoryChanges.FirstOrDefault(d => d.WorkspaceId == ws && d.Users.Any(u => u.Deleted))),
            d => d is not null, because: "UserDirectoryChanged with the deletion");
        Assert.Equal(3, deletion!.DirectoryVersion);
        Assert.All(host.DirectoryChanges.Where(d => d.WorkspaceId == ws), d => Assert.InRange(d.DirectoryVersion, 1, 3));

        using var stream = await host.Admin.GetAsync($"internal/workspaces/{ws}/directory");
        Assert.Equal("3", Assert.Single(stream.Headers.GetValues("X-Directory-Version")));
    }

    [Fact]
    public async Task BulkUpsert_IdentifiersOfDifferentUsers_RejectsTheConflictingLine()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"one","device_ids":["d1"]}""", """{"external_id":"two"}""");
        var result = await host.UpsertAsync(ws,
            """{"external_id":"two","device_ids":["d1"]}""",
            """{"external_id":"x","device_ids":["dup"]}""",
            """{"external_id":"y","device_ids":["dup"]}""");
        Assert.Equal(3, result.GetProperty("rejected").GetInt64());
        Assert.Equal([1, 2, 3], result.GetProperty("errors").EnumerateArray().Select(e => e.GetProperty("line").GetInt32()));
    }

    [Fact]
    public async Task BulkUpsert_ManyProfiles_PublishesBatchedDirectoryChangesAndStreamsDirectory()
    {
        var ws = NewWorkspace();
        var lines = Enumerable.Range(0, 2500).Select(i => $$"""{"external_id":"user-{{i}}","device_ids":["dev-{{i}}"]}""").ToArray();
        var result = await host.UpsertAsync(ws, lines);
        Assert.Equal(2500, result.GetProperty("upserted").GetInt64());

        var users = await Eventually.UntilAsync(
            () => Task.FromResult(host.DirectoryChanges.Where(d => d.WorkspaceId == ws).SelectMany(d => d.Users).Select(u => u.Ordinal).ToHashSet()),
            s => s.Count == 2500, because: "every created user is published");
        Assert.Equal(Enumerable.Range(0, 2500), users.Order());
        Assert.All(host.DirectoryChanges.Where(d => d.WorkspaceId == ws), d => Assert.True(d.Users.Count <= 1000));

        using var live = await host.Admin.GetAsync($"internal/workspaces/{ws}/live-users");
        Assert.Equal(2500 * 4, (await live.Content.ReadAsByteArrayAsync()).Length);
    }

    [Fact]
    public async Task UserProfilesChanged_FromUpstream_UpsertsAndDeletesThroughTheSamePath()
    {
        var ws = NewWorkspace();
        await host.Bus.Publish(new UserProfilesChanged
        {
            WorkspaceId = ws,
            Upserts = [new UserProfile { ExternalId = "up-1" }, new UserProfile { DeviceIds = ["anon"] }],
            OccurredAt = DateTimeOffset.UtcNow,
        });
        await Eventually.UntilAsync(async () => (await host.OrdinalsAsync(ws)).ContainsKey("up-1"), because: "the upstream profile lands");
        await host.ImportAsync(Changes(ws, "feed", Add("up-1")));

        await host.Bus.Publish(new UserProfilesChanged { WorkspaceId = ws, DeletedExternalIds = ["up-1"], OccurredAt = DateTimeOffset.UtcNow });
        var evt = await host.WaitForUpdateAsync(ws, "feed", 2);
        Assert.Equal(0, evt.MemberCount);
    }

    [Fact]
    public async Task BulkUpsert_LineBreaksBomBlankLinesAndUnusualJson_NumbersLinesAsBefore()
    {
        var ws = NewWorkspace();
        // BOM, CRLF, a blank line, a bare CR, an unknown property, an escaped value, trailing garbage, no final break.
        var body = "\uFEFF{\"external_id\":\"a\"}\r\n\r\n{\"external_id\":\"b\",\"extra\":[1]}\r"
            + "{\"device_ids\":[\"x\\u0041\"]}\n{\"external_id\":\"c\"} trailing\n  \t\n{\"external_id\":null,\"aliases\":[{\"alias_label\":\"l\",\"alias_name\":\"n\"}]}";
        using var content = new StringContent(body, new UTF8Encoding(false), "application/x-ndjson");
        using var response = await host.Admin.PostAsync($"admin/workspaces/{ws}/users:bulk", content);
        var result = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(4, result.GetProperty("upserted").GetInt64());
        Assert.Equal([5], result.GetProperty("errors").EnumerateArray().Select(e => e.GetProperty("line").GetInt32()));
        var ordinals = await host.OrdinalsAsync(ws);
        Assert.Equal(0, ordinals["a"]);
        Assert.Equal(1, ordinals["b"]);
        var text = await host.Admin.GetStringAsync($"internal/workspaces/{ws}/directory");
        var users = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["xA"], users[2].GetProperty("device_ids").EnumerateArray().Select(d => d.GetString()));
        Assert.Equal("n", users[3].GetProperty("aliases")[0].GetProperty("alias_name").GetString());
        Assert.Equal("l", users[3].GetProperty("aliases")[0].GetProperty("alias_label").GetString());
    }

    [Fact]
    public async Task BulkUpsert_ExistingAndNewProfilesMixed_KeepsOrdinalsAndNumbersNewUsersInLineOrder()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"old-1"}""", """{"device_ids":["anon"]}""", """{"external_id":"old-2"}""");
        var result = await host.UpsertAsync(ws,
            """{"external_id":"new-1"}""",
            """{"external_id":"old-2","device_ids":["d-old-2"]}""",
            """{"external_id":"named","device_ids":["anon"]}""",
            """{"external_id":"new-2","aliases":[{"alias_name":"crm","alias_label":"7"}]}""",
            """{"external_id":"old-1"}""");

        Assert.Equal(5, result.GetProperty("upserted").GetInt64());
        Assert.Equal(1, result.GetProperty("identified").GetInt64());
        var ordinals = await host.OrdinalsAsync(ws);
        Assert.Equal(0, ordinals["old-1"]);
        Assert.Equal(1, ordinals["named"]);
        Assert.Equal(2, ordinals["old-2"]);
        Assert.Equal(3, ordinals["new-1"]);
        Assert.Equal(4, ordinals["new-2"]);

        // Every changed user is published: the new ones, the identified one and the one that got a device id.
        var published = await Eventually.UntilAsync(
            () => Task.FromResult(host.DirectoryChanges.Where(d => d.WorkspaceId == ws).SelectMany(d => d.Users)
                .Where(u => u.ExternalId is "new-1" or "new-2" or "named" || u.DeviceIds.Contains("d-old-2"))
                .Select(u => u.Ordinal).ToHashSet()),
            s => s.Count == 4, because: "the second upload's changes are published");
        Assert.Equal([1, 2, 3, 4], published.Order());
    }

    [Fact]
    public async Task BulkUpsert_TwoExternalIdsForOneAnonymousUser_FirstIdentifiesSecondIsRejected()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"device_ids":["phone"],"aliases":[{"alias_name":"email","alias_label":"a@b"}]}""");
        var result = await host.UpsertAsync(ws,
            """{"external_id":"first","device_ids":["phone"]}""",
            """{"external_id":"second","aliases":[{"alias_name":"email","alias_label":"a@b"}]}""");

        Assert.Equal(1, result.GetProperty("identified").GetInt64());
        Assert.Equal([2], result.GetProperty("errors").EnumerateArray().Select(e => e.GetProperty("line").GetInt32()));
        var ordinals = await host.OrdinalsAsync(ws);
        Assert.Equal(0, ordinals["first"]);
        Assert.False(ordinals.ContainsKey("second"));
    }

    [Fact]
    public async Task BulkUpsert_InvalidWorkspace_Returns400Problem()
    {
        using var content = new StringContent("""{"external_id":"a"}""", Encoding.UTF8, "application/x-ndjson");
        using var response = await host.Admin.PostAsync("admin/workspaces/Not_Valid/users:bulk", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }
}
