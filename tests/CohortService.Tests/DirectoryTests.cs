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
        var text = await host.Service.Client.GetStringAsync($"internal/workspaces/{ws}/directory");
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

        using var live = await host.Service.Client.GetAsync($"internal/workspaces/{ws}/live-users");
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
    public async Task BulkUpsert_InvalidWorkspace_Returns400Problem()
    {
        using var content = new StringContent("""{"external_id":"a"}""", Encoding.UTF8, "application/x-ndjson");
        using var response = await host.Admin.PostAsync("admin/workspaces/Not_Valid/users:bulk", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }
}
