using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Testing;
using static CohortBridge.EndToEnd.Tests.PartnerScenario;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>
/// README "Error queues": replays are safe. A user directory event moved back to SegmentService's queue after the user
/// was deleted is older than the deletion and must not make the user a member again.
/// </summary>
public sealed class DirectoryReplayTests(PlatformFixture platform) : IClassFixture<PlatformFixture>
{
    private const string DirectoryExchange = "CohortBridge.Contracts:UserDirectoryChanged";

    [Fact]
    public async Task ReplayedDirectoryEvent_OlderThanADeletion_DoesNotBringTheUserBack()
    {
        var s = await PartnerScenario.CreateAsync(platform);
        using var rabbit = platform.Infrastructure.ManagementClient();
        var vhost = Uri.EscapeDataString(platform.VirtualHost);

        // A copy of every directory event, as an error queue would hold one.
        var capture = $"e2e-directory-copy-{s.Workspace}";
        (await rabbit.PutAsJsonAsync($"api/queues/{vhost}/{capture}", new { durable = true })).EnsureSuccessStatusCode();
        (await rabbit.PostAsJsonAsync($"api/bindings/{vhost}/e/{Uri.EscapeDataString(DirectoryExchange)}/q/{capture}", new { routing_key = "" }))
            .EnsureSuccessStatusCode();

        var leaves = $"leaves-{s.Workspace}";
        var stays = $"stays-{s.Workspace}";
        await s.UpsertUsersAsync($$"""{"external_id":"{{leaves}}"}""", $$"""{"external_id":"{{stays}}"}""");
        (await s.NameCohortAsync("loyal", "Loyal customers")).EnsureSuccessStatusCode();
        var segment = await s.CreateSegmentAsync("loyal", s.CohortFilter("loyal"));
        var accepted = await ReadJsonAsync(await s.ChangeAsync("loyal", [Change(userIds: [leaves, stays])]), HttpStatusCode.Accepted);
        await s.WaitForImportAsync(accepted["import_id"]!.GetValue<string>());
        await Eventually.UntilAsync(() => s.IsMemberAsync(segment, $"external_id={leaves}"), member => member, because: "the import reached the segment");

        using (var cohorts = platform.AdminClient(platform.Cohorts))
        {
            Assert.Equal(HttpStatusCode.NoContent, (await cohorts.DeleteAsync($"admin/workspaces/{s.Workspace}/users/{leaves}")).StatusCode);
        }

        await Eventually.UntilAsync(() => s.IsMemberAsync(segment, $"external_id={leaves}"), member => !member, because: "the deletion reached the segment");

        // The event that created the user, moved back to SegmentService's queue ("Move messages" keeps body and properties).
        var creation = await Eventually.UntilAsync(
            async () =>
            {
                using var response = await rabbit.PostAsJsonAsync($"api/queues/{vhost}/{capture}/get",
                    new { count = 100, ackmode = "ack_requeue_true", encoding = "auto" });
                var messages = await response.Content.ReadFromJsonAsync<JsonElement[]>() ?? [];
                return messages.FirstOrDefault(m => JsonDocument.Parse(m.GetProperty("payload").GetString()!).RootElement
                    .GetProperty("message").GetProperty("users").EnumerateArray()
                    .Any(u => u.TryGetProperty("externalId", out var id) && id.GetString() == leaves && !u.GetProperty("deleted").GetBoolean()));
            },
            m => m.ValueKind == JsonValueKind.Object, because: "the creation event was copied");
        var queues = await platform.Infrastructure.QueuesAsync(platform.VirtualHost);
        var directoryQueue = queues.Select(q => q.GetProperty("name").GetString()!)
            .Single(n => n.StartsWith("segments-user-directory-changed-", StringComparison.Ordinal) && !n.EndsWith("_error", StringComparison.Ordinal));
        await platform.Infrastructure.PublishToQueueAsync(platform.VirtualHost, directoryQueue,
            creation.GetProperty("payload").GetString()!, creation.GetProperty("properties"));

        await Eventually.UntilAsync(
            () => Task.FromResult(platform.Segments.Output.Contains($"directory entries of {s.Workspace} at version", StringComparison.Ordinal)),
            because: "SegmentService consumed the replayed event and skipped its older entries");
        Assert.False(await s.IsMemberAsync(segment, $"external_id={leaves}"));
        Assert.True(await s.IsMemberAsync(segment, $"external_id={stays}"));
    }
}
