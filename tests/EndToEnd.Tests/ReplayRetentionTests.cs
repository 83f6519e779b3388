using System.Net;
using System.Text.Json.Nodes;
using CohortBridge.Testing;
using Npgsql;
using static CohortBridge.EndToEnd.Tests.PartnerScenario;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>The platform with CohortService keeping replay history for one second only (Cohorts:ReplayRetention).</summary>
public sealed class ShortReplayRetentionPlatform : PlatformFixture
{
    public ShortReplayRetentionPlatform()
    {
        Overrides["CohortService"] = new()
        {
            ["Cohorts__ReplayRetention"] = "00:00:01",
            ["Cohorts__ReplaySweepInterval"] = "00:00:00.500",
        };
    }
}

/// <summary>
/// Partner requests through the gateway, the broker and CohortService, whose running sweeper then clears the users that
/// only a replay needs: the import keeps its status, statistics and an event with counts only, the change log reports
/// itself incomplete, and the audience stays right as imports go on.
/// </summary>
public sealed class ReplayRetentionTests(ShortReplayRetentionPlatform platform) : IClassFixture<ShortReplayRetentionPlatform>
{
    [Fact]
    public async Task Imports_PastReplayRetention_UserSetsCleared_StatusCountsAndAudienceKept()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync("""{"external_id":"u1"}""", """{"external_id":"u2"}""");
        var first = await ImportAsync(s, Change(userIds: ["u1", "nobody"]));
        var segment = await s.CreateSegmentAsync("aged", s.CohortFilter("aged"));
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 1, because: "segment sees the first import");

        await using var db = new NpgsqlConnection(platform.Infrastructure.ConnectionStringFor(platform.Databases["CohortService"]));
        await db.OpenAsync();
        await using var stored = new NpgsqlCommand("SELECT event_json FROM imports WHERE import_id = @id AND event_trimmed", db);
        stored.Parameters.AddWithValue("id", Guid.Parse(first));
        var trimmed = await Eventually.UntilAsync(async () => await stored.ExecuteScalarAsync() as string, json => json is not null,
            TimeSpan.FromSeconds(20), "the sweeper clears the users from the stored CohortUpdated");
        // What a replay of this import would publish: its version and counts, and a re-read for the users.
        var replayEvent = JsonNode.Parse(trimmed!)!;
        Assert.Equal((1L, 1L, 1L, true), (replayEvent["version"]!.GetValue<long>(), replayEvent["addedCount"]!.GetValue<long>(),
            replayEvent["memberCount"]!.GetValue<long>(), replayEvent["mustReread"]!.GetValue<bool>()));
        Assert.Null(replayEvent["added"]);

        var status = await s.ImportStatusAsync(first);
        Assert.Equal("completed", status["status"]!.GetValue<string>());
        Assert.Equal((2L, 1L, 1L), (status["received"]!.GetValue<long>(), status["matched"]!.GetValue<long>(), status["added"]!.GetValue<long>()));
        // The sweep clears change-log sets right after stored events.
        var log = await Eventually.UntilAsync(() => s.ChangesAfterAsync("aged", 0), l => !l["complete"]!.GetValue<bool>(),
            TimeSpan.FromSeconds(20), "the sweeper clears the version's user sets");
        Assert.Equal(1, log["current_version"]!.GetValue<long>());
        var version = Assert.Single(log["items"]!.AsArray())!;
        Assert.Equal((1L, 0, 0), (version["version"]!.GetValue<long>(), version["added"]!.AsArray().Count, version["removed"]!.AsArray().Count));

        await ImportAsync(s, Change(userIds: ["u2"]));
        await ImportAsync(s, Change(userIds: ["u1"], remove: true));
        await Eventually.UntilAsync(() => s.IsMemberAsync(segment, "external_id=u1"), member => !member, because: "segment sees the removal");
        Assert.True(await s.IsMemberAsync(segment, "external_id=u2"));
        Assert.Equal(1, await s.SegmentSizeAsync(segment));
    }

    private static async Task<string> ImportAsync(PartnerScenario s, object change)
    {
        var accepted = await ReadJsonAsync(await s.ChangeAsync("aged", [change]), HttpStatusCode.Accepted);
        var importId = accepted["import_id"]!.GetValue<string>();
        Assert.Equal("completed", (await s.WaitForImportAsync(importId))["status"]!.GetValue<string>());
        return importId;
    }
}
