using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.SegmentService.Tests.Support;
using CohortBridge.Testing;

namespace CohortBridge.SegmentService.Tests;

/// <summary>
/// Projections from CohortUpdated through the broker into real SegmentService processes: ordering, duplicates,
/// gaps (read from the CohortService internal API), restarts from the persisted copy, and two replicas.
/// </summary>
public sealed class ProjectionTests : IAsyncLifetime
{
    private const string Partner = "tinyclues";
    private readonly SegmentServiceHarness _harness = new();
    private readonly string _ws = "ws-" + Guid.NewGuid().ToString("N")[..12];

    public Task InitializeAsync() => _harness.InitializeAsync();

    public Task DisposeAsync() => _harness.DisposeAsync();

    private FakeCohortService Cohorts => _harness.Cohorts;

    private async Task PublishUsersAsync(int count)
    {
        var users = Enumerable.Range(0, count)
            .Select(i => new DirectoryUser { Ordinal = i, ExternalId = $"u{i}", Identified = true }).ToArray();
        await _harness.PublishAsync(Cohorts.Users(_ws, users));
    }

    private Task<long> SizeAsync(ServiceProcess segments, string cohortId, long expected) =>
        SegmentServiceHarness.CohortSizeBecomesAsync(segments, _ws, Partner, cohortId, expected);

    [Fact]
    public async Task Consume_DuplicateAndOutOfOrderVersions_AppliesEachVersionOnce()
    {
        var segments = await _harness.StartAsync("order");
        var v1 = Cohorts.Change(_ws, Partner, "spring", add: [1, 2, 3]);
        var v2 = Cohorts.Change(_ws, Partner, "spring", add: [4], remove: [1]);
        var v3 = Cohorts.Change(_ws, Partner, "spring", add: [1]);
        var v4 = Cohorts.Change(_ws, Partner, "spring", remove: [2, 3]);

        await _harness.PublishAsync(v1);
        await SizeAsync(segments, "spring", 3);

        // A duplicate of v1 after v2 must not re-add user 1.
        await _harness.PublishAsync(v2);
        await _harness.PublishAsync(v1);
        await _harness.PublishAsync(v2);
        await SizeAsync(segments, "spring", 3);

        // v4 before v3: the gap is read from CohortService's change log; the late v3 is then a duplicate.
        await _harness.PublishAsync(v4);
        await SizeAsync(segments, "spring", 2);
        await _harness.PublishAsync(v3);
        var marker = Cohorts.Change(_ws, Partner, "marker", add: [9]);
        await _harness.PublishAsync(marker);
        await SizeAsync(segments, "marker", 1);
        Assert.Equal(2, await SizeAsync(segments, "spring", 2));
        Assert.Contains(Cohorts.Requests, r => r.Contains("/cohorts/tinyclues/spring/changes?after=", StringComparison.Ordinal));

        var members = await EvaluateMembersAsync(segments, "spring");
        Assert.Equal(Cohorts.MembersOf(_ws, Partner, "spring").Order(), members);
    }

    [Fact]
    public async Task Consume_MustRereadOrGapBeyondChangeLog_ReadsWholeCohort()
    {
        var segments = await _harness.StartAsync("reread");
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "big", add: [1, 2]));
        await SizeAsync(segments, "big", 2);

        var large = Cohorts.Change(_ws, Partner, "big", add: Enumerable.Range(100, 70_000).ToArray());
        await _harness.PublishAsync(large with { Added = null, Removed = null, MustReread = true });
        await SizeAsync(segments, "big", 70_002);

        // The change log no longer reaches back to our version: the members are read whole.
        Cohorts.Change(_ws, Partner, "big", remove: [1]);
        var v4 = Cohorts.Change(_ws, Partner, "big", remove: [2]);
        Cohorts.OldestChangeLogVersion = 4;
        await _harness.PublishAsync(v4);
        await SizeAsync(segments, "big", 70_000);
        Assert.Contains(Cohorts.Requests, r => r.EndsWith("/cohorts/tinyclues/big/members", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Restart_WithPersistedProjection_LoadsItWithoutRereadingCohorts()
    {
        await PublishUsersAsync(20);
        var segments = await _harness.StartAsync("restart");
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "a", name: "A", add: [1, 2, 3, 4]));
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "b", name: "B", add: [3, 4, 5]));
        await SizeAsync(segments, "a", 4);
        await SizeAsync(segments, "b", 3);
        var id = await SegmentServiceHarness.CreateSegmentAsync(segments, _ws,
            new { and = new object[] { Includes("a"), new { cohort = new { partner = Partner, cohort_id = "b" }, op = "excludes" } } });
        await SegmentServiceHarness.SizeBecomesAsync(segments, _ws, id, 2);

        await segments.StopAsync();
        var before = Cohorts.Requests.Count;
        var restarted = await _harness.StartAsync("restart");

        // Ready means loaded and caught up: no polling needed for the persisted state.
        var size = await restarted.Client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/segments/{id}/size");
        Assert.Equal(2, size.GetProperty("size").GetInt64());
        var check = await restarted.Client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/segments/{id}/members/check?external_id=u1");
        Assert.True(check.GetProperty("member").GetBoolean());
        var afterRestart = Cohorts.Requests.Skip(before).ToList();
        Assert.Contains("/internal/cohorts", afterRestart);
        Assert.DoesNotContain(afterRestart, r => r.Contains("/members", StringComparison.Ordinal) || r.Contains("/directory", StringComparison.Ordinal));
        await Eventually.UntilAsync(
            () => Task.FromResult(restarted.Output.Contains("Loaded the persisted projection: 2 cohorts, 20 users", StringComparison.Ordinal)),
            because: "start-up loads the persisted cohorts and directory");
    }

    [Fact]
    public async Task Startup_CohortServiceDown_ReportsReadyWithPersistedProjection()
    {
        var segments = await _harness.StartAsync("down");
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "a", add: [1, 2]));
        await SizeAsync(segments, "a", 2);
        await segments.StopAsync();

        Cohorts.Unavailable = true;
        var restarted = await _harness.StartAsync("down");
        await Eventually.UntilAsync(
            () => Task.FromResult(restarted.Output.Contains("CohortService did not answer within 3 s", StringComparison.Ordinal)),
            because: "start-up logs that it is ready without catching up");
        Assert.Equal(2, await SizeAsync(restarted, "a", 2));

        // Once CohortService is back, the background catch-up reads what was missed meanwhile.
        Cohorts.Change(_ws, Partner, "a", add: [3]);
        Cohorts.Unavailable = false;
        await SizeAsync(restarted, "a", 3);
    }

    [Fact]
    public async Task Startup_FreshReplica_CatchesUpFromCohortService()
    {
        await PublishUsersAsync(10);
        Cohorts.Change(_ws, Partner, "old", name: "Old cohort", add: [1, 2, 3]);
        Cohorts.Change(_ws, Partner, "old", remove: [3]);

        var segments = await _harness.StartAsync("fresh");
        var body = await segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/cohorts");
        var item = Assert.Single(body.GetProperty("items").EnumerateArray());
        Assert.Equal("Old cohort", item.GetProperty("name").GetString());
        Assert.Equal(2, item.GetProperty("version").GetInt64());
        Assert.Equal(2, item.GetProperty("member_count").GetInt64());

        var id = await SegmentServiceHarness.CreateSegmentAsync(segments, _ws, Includes("old"));
        var check = await segments.Client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/segments/{id}/members/check?external_id=u2");
        Assert.True(check.GetProperty("member").GetBoolean());
    }

    [Fact]
    public async Task Restart_WorkspaceCreatedWhileRunning_DirectoryNotReadAgain()
    {
        var segments = await _harness.StartAsync("live-workspace");

        // The workspace appears after the replica caught up: its whole directory comes through the replica's queue.
        await PublishUsersAsync(20);
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "a", add: [1, 2]));
        await SizeAsync(segments, "a", 2);
        var id = await SegmentServiceHarness.CreateSegmentAsync(segments, _ws, Includes("a"));
        await MemberBecomesAsync(segments, id, "u2", expected: true);
        await Eventually.UntilAsync(
            () => Task.FromResult(segments.Output.Contains("Projection caught up with CohortService", StringComparison.Ordinal)),
            because: "the start-up catch-up has ended");
        await segments.StopAsync();

        var before = Cohorts.Requests.Count;
        var restarted = await _harness.StartAsync("live-workspace");
        var check = await restarted.Client.GetFromJsonAsync<JsonElement>($"workspaces/{_ws}/segments/{id}/members/check?external_id=u2");
        Assert.True(check.GetProperty("member").GetBoolean());
        var afterRestart = Cohorts.Requests.Skip(before).ToList();
        Assert.Contains("/internal/workspaces", afterRestart);
        Assert.DoesNotContain(afterRestart, r => r.Contains("/directory", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Startup_BusConnectedAfterCatchUp_CatchesUpAgain_ReadsWorkspaceCreatedMeanwhile()
    {
        // The broker is unreachable when the replica starts: its catch-up lists workspaces before its queues exist.
        await using var broker = TcpGate.Closed(_harness.Infrastructure.RabbitHost, _harness.Infrastructure.RabbitPort);
        var overrides = new Dictionary<string, string> { ["RabbitMq__Port"] = broker.Port.ToString(CultureInfo.InvariantCulture) };
        var segments = await _harness.StartAsync("bus-late", waitUntilReady: false, overrides: overrides);
        await Eventually.UntilAsync(
            () => Task.FromResult(segments.Output.Contains("Caught up before the bus was connected", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(60), "the catch-up ends while the bus is still down");

        // Meanwhile a workspace is created: its directory events find no queue of this replica.
        await PublishUsersAsync(10);
        Cohorts.Change(_ws, Partner, "a", add: [2, 3]);
        broker.Open();

        var id = await CreateSegmentOnceKnownAsync(segments, "a", "the second catch-up reads the cohort");
        await MemberBecomesAsync(segments, id, "u2", expected: true);
        Assert.Contains($"/internal/workspaces/{_ws}/directory", Cohorts.Requests);

        // A workspace created once the queues are bound is complete from events: marked, so a restart does not read it.
        var later = "ws-" + Guid.NewGuid().ToString("N")[..12];
        await _harness.PublishAsync(Cohorts.Users(later, new DirectoryUser { Ordinal = 0, ExternalId = "v0", Identified = true }));
        await _harness.PublishAsync(Cohorts.Change(later, Partner, "b", add: [0]));
        await SegmentServiceHarness.CohortSizeBecomesAsync(segments, later, Partner, "b", 1);
        await segments.StopAsync();
        var before = Cohorts.Requests.Count;
        var restarted = await _harness.StartAsync("bus-late");
        await Eventually.UntilAsync(
            () => Task.FromResult(restarted.Output.Contains("Projection caught up with CohortService", StringComparison.Ordinal)),
            because: "the restart's catch-up ends");
        Assert.DoesNotContain(Cohorts.Requests.Skip(before), r => r.EndsWith("/directory", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Startup_DirectoryStreamCut_RetriesAndKeepsRunning()
    {
        await PublishUsersAsync(10);
        Cohorts.Change(_ws, Partner, "old", add: [3, 4]);
        Cohorts.CutNextDirectoryRead = true;

        var segments = await _harness.StartAsync("cut-stream");
        // Ready may come before the retried catch-up has read the cohort (start-up waits 3 s here; a loaded machine
        // can take longer to cut, retry and read).
        var id = await CreateSegmentOnceKnownAsync(segments, "old", "the retried catch-up reads the cohort");
        await MemberBecomesAsync(segments, id, "u4", expected: true);
        Assert.False(segments.HasExited);
        await Eventually.UntilAsync(
            () => Task.FromResult(segments.Output.Contains("Catching up with CohortService failed; retrying", StringComparison.Ordinal)),
            because: "the cut read is logged and retried");
        Assert.Equal(2, Cohorts.Requests.Count(r => r == $"/internal/workspaces/{_ws}/directory"));
    }

    [Fact]
    public async Task Startup_EventArrivesDuringDirectoryRead_NewerIdentityWins()
    {
        // A first start reads each workspace's directory whole while events already flow. The read is a picture from
        // before an event that arrives during it: applied over the event, it brought a deleted user back for good.
        await PublishUsersAsync(10);
        Cohorts.Change(_ws, Partner, "all", add: [.. Enumerable.Range(0, 10)]);
        var hold = new TaskCompletionSource();
        Cohorts.HoldNextDirectoryRead = hold.Task;

        var segments = await _harness.StartAsync("read-overtaken", waitUntilReady: false);
        await Eventually.UntilAsync(() => Task.FromResult(Cohorts.Requests.Contains($"/internal/workspaces/{_ws}/directory")),
            TimeSpan.FromSeconds(60), "the directory read has started");
        await DirectoryQueueAsync("read-overtaken", q => q.TryGetProperty("consumers", out var n) && n.GetInt32() == 1, "the replica consumes its directory queue");
        await _harness.PublishAsync(Cohorts.Users(_ws, new DirectoryUser { Ordinal = 5, ExternalId = "u5", Identified = true, Deleted = true }));
        // The event is delivered and waits, unacknowledged, for the read (before the fix it was applied and acked at once).
        await DirectoryQueueAsync("read-overtaken", q => q.TryGetProperty("messages_unacknowledged", out var n) && n.GetInt32() == 1,
            "the event is delivered and held while the read runs");
        hold.SetResult();

        await segments.WaitUntilReadyAsync(TimeSpan.FromSeconds(60));
        var id = await CreateSegmentOnceKnownAsync(segments, "all", "the catch-up reads the cohort after the directory");
        await MemberBecomesAsync(segments, id, "u4", expected: true);
        await MemberBecomesAsync(segments, id, "u5", expected: false);
    }

    [Fact]
    public async Task Replay_OlderDirectoryEventAfterDeletion_UserStaysDeleted_AlsoAfterRestart()
    {
        // An SRE moves a directory event back from an error queue after the user was deleted: the event's identity is
        // older than the deletion and must not bring the user back, in memory or in the persisted copy. A deletion is
        // final even against an event without a version.
        var created = Cohorts.Users(_ws, Enumerable.Range(0, 10).Select(i => new DirectoryUser { Ordinal = i, ExternalId = $"u{i}", Identified = true }).ToArray());
        await _harness.PublishAsync(created);
        Cohorts.Change(_ws, Partner, "all", add: [.. Enumerable.Range(0, 10)]);
        var segments = await _harness.StartAsync("replay");
        var id = await CreateSegmentOnceKnownAsync(segments, "all", "the catch-up reads the cohort");
        await MemberBecomesAsync(segments, id, "u5", expected: true);
        await _harness.PublishAsync(Cohorts.Users(_ws, new DirectoryUser { Ordinal = 5, ExternalId = "u5", Identified = true, Deleted = true }));
        await MemberBecomesAsync(segments, id, "u5", expected: false);

        await ReplayAndAssertSkippedAsync(segments, "the replayed event has been consumed");

        await segments.StopAsync();
        var restarted = await _harness.StartAsync("replay");
        await ReplayAndAssertSkippedAsync(restarted, "the replica reloaded the deletion's version and skips the replay again");

        // The event as published, and as a CohortService from before directory versions published it (version 0).
        async Task ReplayAndAssertSkippedAsync(ServiceProcess replica, string because)
        {
            foreach (var replayed in new[] { created, created with { DirectoryVersion = 0 } })
            {
                await _harness.PublishAsync(replayed);
                await Eventually.UntilAsync(
                    () => Task.FromResult(replica.Output.Contains($"Skipped 1 directory entries of {_ws} at version {replayed.DirectoryVersion}", StringComparison.Ordinal)),
                    because: because);
                await MemberBecomesAsync(replica, id, "u5", expected: false);
                await MemberBecomesAsync(replica, id, "u4", expected: true);
            }
        }
    }

    [Fact]
    public async Task Startup_DirectoryReadStalls_AbandonedRetriedAndEventsApplyAfter()
    {
        // Directory events wait for a whole-directory read: a stream that stops sending must not hold them for ever.
        await PublishUsersAsync(10);
        Cohorts.Change(_ws, Partner, "all", add: [.. Enumerable.Range(0, 10)]);
        Cohorts.HoldNextDirectoryRead = new TaskCompletionSource().Task;

        var segments = await _harness.StartAsync("read-stalls", waitUntilReady: false,
            overrides: new Dictionary<string, string> { ["Segments__DirectoryReadIdleSeconds"] = "2" });
        await DirectoryQueueAsync("read-stalls", q => q.TryGetProperty("consumers", out var n) && n.GetInt32() == 1, "the replica consumes its directory queue");
        await _harness.PublishAsync(Cohorts.Users(_ws, new DirectoryUser { Ordinal = 5, ExternalId = "u5", Identified = true, Deleted = true }));

        var id = await CreateSegmentOnceKnownAsync(segments, "all", "the retried catch-up reads the cohort");
        await MemberBecomesAsync(segments, id, "u4", expected: true);
        await MemberBecomesAsync(segments, id, "u5", expected: false);
        Assert.Contains("sent nothing of workspace", segments.Output, StringComparison.Ordinal);
        Assert.Equal(2, Cohorts.Requests.Count(r => r == $"/internal/workspaces/{_ws}/directory"));
    }

    [Fact]
    public async Task TwoInstances_SameEvents_BothUpToDateOnTheirOwnQueues()
    {
        var first = await _harness.StartAsync("replica-1");
        var second = await _harness.StartAsync("replica-2");
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "shared", add: [1, 2, 3]));
        await _harness.PublishAsync(Cohorts.Change(_ws, Partner, "shared", add: [4, 5], remove: [1]));
        await SizeAsync(first, "shared", 4);
        await SizeAsync(second, "shared", 4);

        var names = (await _harness.Infrastructure.QueuesAsync(_harness.VirtualHost)).Select(q => q.GetProperty("name").GetString()).ToHashSet();
        Assert.Contains("segments-cohort-updated-replica-1", names);
        Assert.Contains("segments-cohort-updated-replica-2", names);
        Assert.Contains("segments-user-directory-changed-replica-1", names);
    }

    /// <summary>Polls the replica's directory queue in the management API (its statistics lag a few seconds).</summary>
    private Task<JsonElement> DirectoryQueueAsync(string instanceId, Func<JsonElement, bool> condition, string because) =>
        Eventually.UntilAsync(
            async () => await _harness.Infrastructure.QueueAsync(_harness.VirtualHost, $"segments-user-directory-changed-{instanceId}") ?? default,
            q => q.ValueKind == JsonValueKind.Object && condition(q), TimeSpan.FromSeconds(60), because);

    private Task<Guid> CreateSegmentOnceKnownAsync(ServiceProcess segments, string cohortId, string because) =>
        Eventually.UntilAsync(
            async () =>
            {
                using var response = await segments.Client.PostAsJsonAsync($"admin/workspaces/{_ws}/segments", new { name = cohortId, filter = Includes(cohortId) });
                return response.IsSuccessStatusCode ? (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("segment_id").GetGuid() : Guid.Empty;
            },
            id => id != Guid.Empty, TimeSpan.FromSeconds(60), because);

    private Task<bool> MemberBecomesAsync(ServiceProcess segments, Guid segmentId, string externalId, bool expected) =>
        Eventually.UntilAsync(
            async () =>
            {
                using var response = await segments.Client.GetAsync($"workspaces/{_ws}/segments/{segmentId}/members/check?external_id={externalId}");
                return response.IsSuccessStatusCode
                    && (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("member").GetBoolean();
            },
            member => member == expected,
            because: $"{externalId} is{(expected ? "" : " not")} a member");

    private static object Includes(string cohortId) => new { cohort = new { partner = Partner, cohort_id = cohortId }, op = "includes" };

    private async Task<int[]> EvaluateMembersAsync(ServiceProcess segments, string cohortId)
    {
        await PublishUsersAsync(50);
        var id = await SegmentServiceHarness.CreateSegmentAsync(segments, _ws, Includes(cohortId));
        var lines = await Eventually.UntilAsync(
            async () => (await segments.Client.GetStringAsync($"workspaces/{_ws}/segments/{id}/members"))
                .Split('\n', StringSplitOptions.RemoveEmptyEntries),
            l => l.Length == Cohorts.MembersOf(_ws, Partner, cohortId).Count,
            because: "the directory names every member");
        return lines.Select(l => int.Parse(JsonDocument.Parse(l).RootElement.GetProperty("external_id").GetString()![1..],
            System.Globalization.CultureInfo.InvariantCulture)).ToArray();
    }
}
