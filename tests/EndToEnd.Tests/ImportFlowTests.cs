using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using CohortBridge.Testing;
using static CohortBridge.EndToEnd.Tests.PartnerScenario;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>
/// The product's promise through real processes: partner HTTP → gateway → RabbitMQ → CohortService → PostgreSQL →
/// CohortUpdated → SegmentService → a campaign service's questions.
/// </summary>
public sealed class ImportFlowTests(PlatformFixture platform) : IClassFixture<PlatformFixture>
{
    [Fact]
    public async Task PartnerImport_ExistingUsers_ChangeSegmentAndReportMatches()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync(
            """{"external_id":"u1"}""",
            """{"device_ids":["d2"]}""",
            """{"external_id":"u3","aliases":[{"alias_name":"u3@example.com","alias_label":"email"}]}""",
            """{"external_id":"u4","device_ids":["d4"]}""");

        (await s.NameCohortAsync("spring", "Spring sale")).EnsureSuccessStatusCode();
        var segment = await s.CreateSegmentAsync("spring buyers", s.CohortFilter("spring"));

        var accepted = await ReadJsonAsync(await s.ChangeAsync("spring", [
            Change(userIds: ["u1", "nobody"], deviceIds: ["d2", "d4"], aliases: [new { alias_name = "u3@example.com", alias_label = "email" }]),
        ]), HttpStatusCode.Accepted);
        Assert.Equal("success", accepted["message"]!.GetValue<string>());

        var status = await s.WaitForImportAsync(accepted["import_id"]!.GetValue<string>());
        Assert.Equal("completed", status["status"]!.GetValue<string>());
        Assert.Equal(5, status["received"]!.GetValue<long>());
        Assert.Equal(3, status["matched"]!.GetValue<long>());
        Assert.Equal(3, status["added"]!.GetValue<long>());
        Assert.Equal(1, status["unmatched"]!["unknown_external_id"]!.GetValue<long>());
        Assert.Equal(1, status["unmatched"]!["device_id_of_identified_user"]!.GetValue<long>());
        // Accepted before it was published, so never after CohortService completed it; both in UTC with 'Z'.
        var (acceptedAt, completedAt) = (status["accepted_at"]!.GetValue<string>(), status["completed_at"]!.GetValue<string>());
        Assert.True(DateTimeOffset.Parse(acceptedAt, CultureInfo.InvariantCulture) <= DateTimeOffset.Parse(completedAt, CultureInfo.InvariantCulture),
            $"accepted_at {acceptedAt}, completed_at {completedAt}");
        Assert.EndsWith("Z", completedAt, StringComparison.Ordinal);

        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 3, because: "segment sees the import");
        Assert.True(await s.IsMemberAsync(segment, "external_id=u1"));
        Assert.True(await s.IsMemberAsync(segment, "device_id=d2"));
        Assert.True(await s.IsMemberAsync(segment, "alias_name=u3%40example.com&alias_label=email"));
        Assert.False(await s.IsMemberAsync(segment, "external_id=u4"));
        Assert.False(await s.IsMemberAsync(segment, "external_id=nobody"));
        var members = await s.MembersAsync(segment);
        Assert.Contains("\"u1\"", members, StringComparison.Ordinal);
        Assert.DoesNotContain("\"u4\"", members, StringComparison.Ordinal);

        var removal = await ReadJsonAsync(await s.ChangeAsync("spring", [Change(userIds: ["u1"], remove: true)]), HttpStatusCode.Accepted);
        Assert.Equal(1, (await s.WaitForImportAsync(removal["import_id"]!.GetValue<string>()))["removed"]!.GetValue<long>());
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 2, because: "segment sees the removal");
        Assert.False(await s.IsMemberAsync(segment, "external_id=u1"));
    }

    [Fact]
    public async Task PartnerImport_IdentifiersWithNulCharacter_CountedInvalid_RestApplied()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync("""{"external_id":"u1"}""", """{"external_id":"u2"}""");

        // PostgreSQL's text cannot hold U+0000: such identifiers once failed the whole import after its 202.
        var accepted = await ReadJsonAsync(await s.ChangeAsync("nul", [
            Change(userIds: ["u1", "u\0x"], deviceIds: ["d\0"], aliases: [new { alias_name = "a\0", alias_label = "email" }]),
            Change(userIds: ["u2"]),
        ]), HttpStatusCode.Accepted);

        var status = await s.WaitForImportAsync(accepted["import_id"]!.GetValue<string>());
        Assert.Equal("completed", status["status"]!.GetValue<string>());
        Assert.Equal((5L, 2L, 2L), (status["received"]!.GetValue<long>(), status["matched"]!.GetValue<long>(), status["added"]!.GetValue<long>()));
        Assert.Equal(3, status["unmatched"]!["invalid_identifier"]!.GetValue<long>());
        var segment = await s.CreateSegmentAsync("nul", s.CohortFilter("nul"));
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 2, because: "both users are in the cohort");
    }

    [Fact]
    public async Task ChangesInOneRequest_AddThenRemove_ApplyInArrayOrder()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync("""{"external_id":"a"}""", """{"external_id":"b"}""");
        var accepted = await ReadJsonAsync(await s.ChangeAsync("ordered", [
            Change(userIds: ["a", "b"]),
            Change(userIds: ["a"], remove: true),
        ]), HttpStatusCode.Accepted);
        await s.WaitForImportAsync(accepted["import_id"]!.GetValue<string>());
        var segment = await s.CreateSegmentAsync("ordered", s.CohortFilter("ordered"));
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 1, because: "only b remains");
        Assert.True(await s.IsMemberAsync(segment, "external_id=b"));
        Assert.False(await s.IsMemberAsync(segment, "external_id=a"));
    }

    [Fact]
    public async Task SeparateRequests_AddThenRemove_ApplyInTheOrderTheyWereAccepted()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync("""{"external_id":"x"}""", """{"external_id":"y"}""");
        // Each request is sent as soon as the previous one got its 202, as a connector replaying a change feed does;
        // none waits for processing. Whatever order the broker and consumers see them in, the last word wins.
        var importIds = new List<string>();
        for (var round = 0; round < 6; round++)
        {
            foreach (var remove in new[] { false, true })
            {
                var accepted = await ReadJsonAsync(await s.ChangeAsync("feed", [Change(userIds: ["x"], remove: remove)]), HttpStatusCode.Accepted);
                importIds.Add(accepted["import_id"]!.GetValue<string>());
            }
        }

        var last = await ReadJsonAsync(await s.ChangeAsync("feed", [Change(userIds: ["y"])]), HttpStatusCode.Accepted);
        importIds.Add(last["import_id"]!.GetValue<string>());
        var versions = new List<long>();
        foreach (var importId in importIds)
        {
            versions.Add((await s.WaitForImportAsync(importId))["cohort_version"]!.GetValue<long>());
        }

        // Every request changed the cohort, so versions are 1..13 in request order.
        Assert.Equal(Enumerable.Range(1, importIds.Count).Select(v => (long)v), versions);
        var segment = await s.CreateSegmentAsync("feed", s.CohortFilter("feed"));
        // Size 1 alone also holds at version 11 ({x}) while SegmentService is still catching up: wait for the final
        // state, which only version 13 has (y is added last of all).
        await Eventually.UntilAsync(
            async () => (X: await s.IsMemberAsync(segment, "external_id=x"), Y: await s.IsMemberAsync(segment, "external_id=y")),
            m => m == (false, true), because: "x was removed last, y added");
        Assert.Equal(1, await s.SegmentSizeAsync(segment));
    }

    [Fact]
    public async Task Segment_IncludesAndExcludes_EvaluatesAcrossCohorts()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        await s.UpsertUsersAsync("""{"external_id":"x1"}""", """{"external_id":"x2"}""", """{"external_id":"x3"}""");
        var first = await ReadJsonAsync(await s.ChangeAsync("all", [Change(userIds: ["x1", "x2", "x3"])]), HttpStatusCode.Accepted);
        var second = await ReadJsonAsync(await s.ChangeAsync("churned", [Change(userIds: ["x2"])]), HttpStatusCode.Accepted);
        await s.WaitForImportAsync(first["import_id"]!.GetValue<string>());
        await s.WaitForImportAsync(second["import_id"]!.GetValue<string>());

        var segment = await s.CreateSegmentAsync("all but churned", new { and = new[] { s.CohortFilter("all"), s.CohortFilter("churned", "excludes") } });
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 2, because: "x1 and x3");
        Assert.False(await s.IsMemberAsync(segment, "external_id=x2"));

        // Archiving a cohort makes it evaluate as empty everywhere: "excludes churned" now excludes nobody.
        Assert.Equal(HttpStatusCode.Accepted, (await s.ArchiveAsync("churned")).StatusCode);
        await Eventually.UntilAsync(() => s.SegmentSizeAsync(segment), size => size == 3, because: "archived cohort is empty");
    }

    [Fact]
    public async Task KeyInvalidation_ThroughAdminApi_RefusedByGatewayWithinOneSecond()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        Assert.Equal(HttpStatusCode.Accepted, (await s.ChangeAsync("credential-check", [])).StatusCode);

        using var keys = platform.AdminClient(platform.Keys);
        var deleted = await keys.DeleteAsync($"admin/workspaces/{s.Workspace}/partners/{s.Partner}/import-keys/{s.KeyId}");
        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        var invalidatedAt = DateTime.UtcNow;

        var refused = await Eventually.UntilAsync(() => s.ChangeAsync("credential-check", []),
            r => r.StatusCode == HttpStatusCode.Unauthorized, TimeSpan.FromSeconds(5), "invalidated key refused");
        Assert.True(DateTime.UtcNow - invalidatedAt < TimeSpan.FromSeconds(1.5), "refused within about a second");
        var body = await refused.Content.ReadFromJsonAsync<JsonObject>();
        Assert.Equal("Invalid client secret", body!["message"]!.GetValue<string>());
    }
}
