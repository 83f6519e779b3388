using System.Text.Json;
using CohortBridge.Contracts;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>The matching rules of shared/API.md, one by one, through the broker, the process and the database.</summary>
[Collection("cohort-service")]
public sealed class ImportMatchingTests(SharedCohortService host)
{
    private static long Unmatched(JsonElement status, string reason) =>
        status.GetProperty("unmatched").TryGetProperty(reason, out var n) ? n.GetInt64() : 0;

    private static void AssertBalanced(JsonElement status)
    {
        var unmatched = status.GetProperty("unmatched").EnumerateObject().Sum(p => p.Value.GetInt64());
        Assert.Equal(status.GetProperty("received").GetInt64(), status.GetProperty("matched").GetInt64() + unmatched);
        Assert.True(status.GetProperty("unmatched_sample").GetArrayLength() <= 20);
    }

    [Fact]
    public async Task Import_IdentifiedUser_MatchesByExternalIdOrAlias()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws,
            """{"external_id":"u1","aliases":[{"alias_name":"crm","alias_label":"c-1"}]}""",
            """{"external_id":"u2","aliases":[{"alias_name":"crm","alias_label":"c-2"}]}""");
        var ord = await host.OrdinalsAsync(ws);

        var status = await host.ImportAsync(Changes(ws, "spring",
            Add("u1"),
            new CohortChange { Aliases = [new UserAlias { AliasName = "crm", AliasLabel = "c-2" }] }));

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal(2, status.GetProperty("received").GetInt64());
        Assert.Equal(2, status.GetProperty("matched").GetInt64());
        Assert.Equal(2, status.GetProperty("added").GetInt64());
        Assert.Equal(1, status.GetProperty("cohort_version").GetInt64());
        var (members, version, _) = await host.MembersAsync(ws, "spring");
        Assert.Equal(new[] { ord["u1"], ord["u2"] }.Order(), members);
        Assert.Equal(1, version);
        var evt = await host.WaitForUpdateAsync(ws, "spring", 1);
        Assert.Equal(2, evt.AddedCount);
        Assert.Equal(["u1", "u2"], evt.Added!.Select(a => a.ExternalId).Order());
        Assert.Equal("spring", evt.CohortName);
        Assert.False(evt.MustReread);
    }

    [Fact]
    public async Task Import_AnonymousUser_MatchesByDeviceIdOrAlias()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws,
            """{"device_ids":["dev-a"]}""",
            """{"aliases":[{"alias_name":"email","alias_label":"b@x"}],"device_ids":["dev-b"]}""");

        var status = await host.ImportAsync(Changes(ws, "anon", new CohortChange
        {
            DeviceIds = ["dev-a"],
            Aliases = [new UserAlias { AliasName = "email", AliasLabel = "b@x" }],
        }));

        Assert.Equal(2, status.GetProperty("matched").GetInt64());
        var (members, _, _) = await host.MembersAsync(ws, "anon");
        Assert.Equal([0, 1], members);
    }

    [Fact]
    public async Task Import_DeviceIdOfIdentifiedUser_IsUnmatchedEvenWhenIdentifiedLater()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws,
            """{"external_id":"born-identified","device_ids":["dev-1"]}""",
            """{"device_ids":["dev-2"],"aliases":[{"alias_name":"a","alias_label":"later"}]}""");
        // Identify the anonymous user by one of its device ids.
        var identify = await host.UpsertAsync(ws, """{"external_id":"identified-later","device_ids":["dev-2"]}""");
        Assert.Equal(1, identify.GetProperty("identified").GetInt64());

        var status = await host.ImportAsync(Changes(ws, "devices", new CohortChange { DeviceIds = ["dev-1", "dev-2"] }));

        Assert.Equal(0, status.GetProperty("matched").GetInt64());
        Assert.Equal(2, Unmatched(status, "device_id_of_identified_user"));
        AssertBalanced(status);
        // The identified-later user still matches by external_id and by its alias.
        var again = await host.ImportAsync(Changes(ws, "devices",
            new CohortChange { ExternalIds = ["identified-later"], Aliases = [new UserAlias { AliasName = "a", AliasLabel = "later" }] }));
        Assert.Equal(2, again.GetProperty("matched").GetInt64());
        Assert.Equal(1, again.GetProperty("added").GetInt64());
    }

    [Fact]
    public async Task Import_UnknownAndInvalidIdentifiers_CountedUnderOneReasonEach()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"known"}""");
        var tooLong = new string('x', 513);
        var status = await host.ImportAsync(Changes(ws, "mixed", new CohortChange
        {
            ExternalIds = ["known", "known", "nobody", "", tooLong],
            DeviceIds = ["no-device", ""],
            Aliases = [new UserAlias { AliasName = "x", AliasLabel = "y" }, new UserAlias { AliasName = "", AliasLabel = "y" }],
            InvalidIdentifiers = ["42", "{\"a\":1}"],
        }));

        Assert.Equal(11, status.GetProperty("received").GetInt64());
        Assert.Equal(2, status.GetProperty("matched").GetInt64()); // each occurrence counts
        Assert.Equal(1, status.GetProperty("added").GetInt64()); // set semantics
        Assert.Equal(1, Unmatched(status, "unknown_external_id"));
        Assert.Equal(1, Unmatched(status, "unknown_device_id"));
        Assert.Equal(1, Unmatched(status, "unknown_alias"));
        Assert.Equal(6, Unmatched(status, "invalid_identifier"));
        AssertBalanced(status);
        var sample = status.GetProperty("unmatched_sample").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("nobody", sample);
        Assert.Contains("x:y", sample);
    }

    [Fact]
    public async Task Import_IdentifiersWithNulCharacter_CountedInvalid_RestApplied()
    {
        // The gateway already counts these as invalid; a message from elsewhere must not fail the import either.
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"known"}""");
        var status = await host.ImportAsync(Changes(ws, "nul", new CohortChange
        {
            ExternalIds = ["known", "a\0b"],
            DeviceIds = ["d\0"],
            Aliases = [new UserAlias { AliasName = "x\0", AliasLabel = "y" }],
            InvalidIdentifiers = ["raw\0"],
        }));

        Assert.Equal("completed", status.GetProperty("status").GetString());
        Assert.Equal((5L, 1L, 1L), (status.GetProperty("received").GetInt64(), status.GetProperty("matched").GetInt64(), status.GetProperty("added").GetInt64()));
        Assert.Equal(4, Unmatched(status, "invalid_identifier"));
        var sample = status.GetProperty("unmatched_sample").EnumerateArray().Select(e => e.GetString()).Order().ToList();
        Assert.Equal(["a\uFFFDb", "d\uFFFD", "raw\uFFFD", "x\uFFFD:y"], sample);
    }

    [Fact]
    public async Task Import_ManyUnmatched_SampleHoldsAtMostTwenty()
    {
        var ws = NewWorkspace();
        var status = await host.ImportAsync(Changes(ws, "sample", Add([.. Enumerable.Range(0, 100).Select(i => $"ghost-{i}")])));
        Assert.Equal(100, Unmatched(status, "unknown_external_id"));
        Assert.Equal(20, status.GetProperty("unmatched_sample").GetArrayLength());
        // A cohort addressed by changes exists from then on, named after its id, even with nobody matched.
        var (members, version, _) = await host.MembersAsync(ws, "sample");
        Assert.Empty(members);
        Assert.Equal(1, version);
    }

    [Fact]
    public async Task Import_ChangesWithinOneRequest_ApplyInArrayOrder()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"a"}""", """{"external_id":"b"}""", """{"external_id":"c"}""");
        var ord = await host.OrdinalsAsync(ws);

        // add a, remove a, add b → only b. Then remove c (not a member), add c → c; remove b, add b → still b.
        var first = await host.ImportAsync(Changes(ws, "order", Add("a"), Remove("a"), Add("b")));
        Assert.Equal(1, first.GetProperty("added").GetInt64());
        Assert.Equal([ord["b"]], (await host.MembersAsync(ws, "order")).Ordinals);

        var second = await host.ImportAsync(Changes(ws, "order", Remove("c"), Add("c"), Remove("b"), Add("b")));
        Assert.Equal(1, second.GetProperty("added").GetInt64());
        Assert.Equal(0, second.GetProperty("removed").GetInt64());
        Assert.Equal(new[] { ord["b"], ord["c"] }.Order(), (await host.MembersAsync(ws, "order")).Ordinals);

        var evt = await host.WaitForUpdateAsync(ws, "order", 2);
        Assert.Equal([ord["c"]], evt.Added!.Select(a => a.Ordinal));
        Assert.Empty(evt.Removed!);
    }

    [Fact]
    public async Task Import_NothingCreatesUsers_OnlyExistingOnesJoin()
    {
        var ws = NewWorkspace();
        await host.UpsertAsync(ws, """{"external_id":"only"}""");
        await host.ImportAsync(Changes(ws, "c", Add("only", "new-1", "new-2"), new CohortChange { DeviceIds = ["d-new"] }));
        var directory = await host.Admin.GetStringAsync($"internal/workspaces/{ws}/directory");
        Assert.Single(directory.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Import_SameWorkspaceIdentifiersElsewhere_TenantsAreIsolated()
    {
        var (ws1, ws2) = (NewWorkspace(), NewWorkspace());
        await host.UpsertAsync(ws1, """{"external_id":"shared","device_ids":["d"]}""");
        await host.UpsertAsync(ws2, """{"external_id":"other"}""", """{"device_ids":["d"]}""");

        var s2 = await host.ImportAsync(Changes(ws2, "same-id", Add("shared"), new CohortChange { DeviceIds = ["d"] }));
        var s1 = await host.ImportAsync(Changes(ws1, "same-id", Add("shared")));

        Assert.Equal(1, Unmatched(s2, "unknown_external_id"));
        Assert.Equal(1, s2.GetProperty("matched").GetInt64()); // the anonymous device of ws2
        Assert.Equal(new[] { 1 }, (await host.MembersAsync(ws2, "same-id")).Ordinals);
        Assert.Equal(new[] { 0 }, (await host.MembersAsync(ws1, "same-id")).Ordinals);
        Assert.Equal(1, s1.GetProperty("cohort_version").GetInt64());
        Assert.Equal(1, s2.GetProperty("cohort_version").GetInt64());
    }
}
