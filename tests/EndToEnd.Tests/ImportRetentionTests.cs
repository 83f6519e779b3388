using System.Net;
using System.Text.Json.Nodes;
using CohortBridge.Testing;
using Npgsql;
using static CohortBridge.EndToEnd.Tests.PartnerScenario;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>
/// The platform keeping finished imports for ten seconds (Cohorts:ImportRetention, Gateway:ImportRetention): long enough
/// for a loaded machine to apply an import and show it completed first.
/// </summary>
public sealed class ShortImportRetentionPlatform : PlatformFixture
{
    public ShortImportRetentionPlatform()
    {
        Overrides["CohortService"] = new()
        {
            ["Cohorts__ReplayRetention"] = "00:00:01",
            ["Cohorts__ImportRetention"] = "00:00:10",
            ["Cohorts__ReplaySweepInterval"] = "00:00:00.500",
        };
        Overrides["ImportGateway"] = new()
        {
            ["Gateway__ImportRetention"] = "00:00:10",
            ["Gateway__PurgeInterval"] = "00:00:00.500",
        };
    }
}

/// <summary>
/// Partner requests through the gateway, the broker and CohortService, whose running sweepers then delete the finished
/// imports: import status answers 404, both services' rows and the change-log entries are gone, and the cohort, its
/// audience and later imports are untouched.
/// </summary>
public sealed class ImportRetentionTests(ShortImportRetentionPlatform platform) : IClassFixture<ShortImportRetentionPlatform>
{
    [Fact]
    public async Task Import_PastImportRetention_StatusGoneRowsDeletedAudienceKept()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync("""{"external_id":"u1"}""", """{"external_id":"u2"}""");
        var accepted = await ReadJsonAsync(await s.ChangeAsync("expiring", [Change(userIds: ["u1"])]), HttpStatusCode.Accepted);
        var importId = accepted["import_id"]!.GetValue<string>();
        Assert.Equal("completed", (await s.WaitForImportAsync(importId))["status"]!.GetValue<string>());
        var segment = await s.CreateSegmentAsync("expiring", s.CohortFilter("expiring"));
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 1, because: "segment sees the import");

        var gone = await Eventually.UntilAsync(async () =>
        {
            using var response = await s.GetImportStatusAsync(importId);
            return (response.StatusCode, await response.Content.ReadAsStringAsync());
        }, r => r.StatusCode == HttpStatusCode.NotFound, TimeSpan.FromSeconds(30), "the import's status expires");
        Assert.Equal("import not found", JsonNode.Parse(gone.Item2)!["message"]!.GetValue<string>());

        await Eventually.UntilAsync(() => CountAsync("CohortService", "SELECT count(*) FROM imports WHERE import_id = @id", importId),
            n => n == 0, TimeSpan.FromSeconds(20), "CohortService deletes the import");
        await Eventually.UntilAsync(() => CountAsync("ImportGateway", "SELECT count(*) FROM accepted_imports WHERE import_id = @id", importId),
            n => n == 0, TimeSpan.FromSeconds(20), "the gateway deletes the accepted import");
        var log = await Eventually.UntilAsync(() => s.ChangesAfterAsync("expiring", 0), l => l["items"]!.AsArray().Count == 0,
            TimeSpan.FromSeconds(20), "the change-log entry is deleted");
        Assert.Equal((1L, false), (log["current_version"]!.GetValue<long>(), log["complete"]!.GetValue<bool>()));

        Assert.True(await s.IsMemberAsync(segment, "external_id=u1"));
        var next = await ReadJsonAsync(await s.ChangeAsync("expiring", [Change(userIds: ["u1"], remove: true), Change(userIds: ["u2"])]), HttpStatusCode.Accepted);
        var status = await s.WaitForImportAsync(next["import_id"]!.GetValue<string>());
        Assert.Equal(("completed", 2L), (status["status"]!.GetValue<string>(), status["cohort_version"]!.GetValue<long>()));
        await Eventually.UntilAsync(() => s.IsMemberAsync(segment, "external_id=u1"), member => !member, because: "segment sees the removal");
        Assert.True(await s.IsMemberAsync(segment, "external_id=u2"));
        Assert.Equal(1, await s.SegmentSizeAsync(segment));
    }

    private async Task<long> CountAsync(string service, string sql, string importId)
    {
        await using var db = new NpgsqlConnection(platform.Infrastructure.ConnectionStringFor(platform.Databases[service]));
        await db.OpenAsync();
        await using var command = new NpgsqlCommand(sql, db);
        command.Parameters.AddWithValue("id", Guid.Parse(importId));
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
