using CohortBridge.Testing;
using Dapper;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// A crash between commit and publish: the process is configured to end (Environment.FailFast) right after committing
/// one import and before publishing. The broker then redelivers the unacknowledged message to the restarted process,
/// which finds the import applied and publishes the stored CohortUpdated; nothing is applied twice.
/// </summary>
public sealed class CrashBetweenCommitAndPublishTests : IAsyncLifetime
{
    private readonly CohortServiceHost _host = new();

    public Task InitializeAsync() => _host.StartAsync();

    public Task DisposeAsync() => _host.DisposeAsync().AsTask();

    [Fact]
    public async Task Import_ProcessCrashesAfterCommit_RedeliveryPublishesStoredEventOnce()
    {
        var ws = NewWorkspace();
        await _host.UpsertAsync(ws, """{"external_id":"u1"}""", """{"external_id":"u2"}""");
        var message = Changes(ws, "crash", Add("u1", "u2"));
        await _host.RestartAsync(new Dictionary<string, string>
        {
            ["Cohorts__TestHooks__CrashAfterCommitImportId"] = message.ImportId.ToString(),
        });

        await _host.Bus.Publish(message);
        await Eventually.UntilAsync(() => Task.FromResult(_host.Service.HasExited), because: "the process crashes after commit");
        await using (var conn = await _host.OpenAsync())
        {
            var status = await conn.ExecuteScalarAsync<string>("SELECT status FROM imports WHERE import_id = @id", new { id = message.ImportId });
            Assert.Equal("completed", status);
        }

        Assert.Empty(_host.UpdatesOf(ws, "crash"));

        await _host.RestartAsync();
        var evt = await _host.WaitForUpdateAsync(ws, "crash", 1);
        Assert.Equal(2, evt.AddedCount);
        Assert.Equal(message.ImportId, evt.ImportId);
        var (members, version, _) = await _host.MembersAsync(ws, "crash");
        Assert.Equal([0, 1], members);
        Assert.Equal(1, version);
    }
}

/// <summary>Two CohortService instances compete for change sets of one cohort: versions stay a gap-free sequence.</summary>
public sealed class ConcurrentInstancesTests : IAsyncLifetime
{
    private readonly CohortServiceHost _host = new();
    private ServiceProcess? _second;

    public async Task InitializeAsync()
    {
        await _host.StartAsync();
        _second = await _host.StartProcessAsync();
    }

    public async Task DisposeAsync()
    {
        if (_second is not null)
        {
            await _second.DisposeAsync();
        }

        await _host.DisposeAsync();
    }

    [Fact]
    public async Task Import_ConcurrentChangeSetsForOneCohort_EndInConsistentVersionSequence()
    {
        const int imports = 30;
        var ws = NewWorkspace();
        await _host.UpsertAsync(ws, [.. Enumerable.Range(0, imports).Select(i => $$"""{"external_id":"u{{i}}"}""")]);
        var messages = Enumerable.Range(0, imports).Select(i => Changes(ws, "hot", Add($"u{i}"))).ToList();

        await Task.WhenAll(messages.Select(m => _host.Bus.Publish(m)));
        foreach (var m in messages)
        {
            await _host.WaitForImportAsync(ws, m.ImportId);
        }

        await using var conn = await _host.OpenAsync();
        var versions = (await conn.QueryAsync<long>(
            "SELECT cohort_version FROM imports WHERE workspace_id = @ws ORDER BY cohort_version", new { ws })).ToList();
        Assert.Equal(Enumerable.Range(1, imports).Select(v => (long)v), versions);
        var log = (await conn.QueryAsync<long>(
            "SELECT c.version FROM cohort_changes c JOIN cohorts k ON k.id = c.cohort_pk WHERE k.workspace_id = @ws ORDER BY 1", new { ws })).ToList();
        Assert.Equal(versions, log);
        var (members, version, _) = await _host.MembersAsync(ws, "hot");
        Assert.Equal(imports, members.Length);
        Assert.Equal(imports, version);
        var published = await Eventually.UntilAsync(
            () => Task.FromResult(_host.UpdatesOf(ws, "hot").Select(u => u.Version).Distinct().Count()),
            n => n == imports, because: "one CohortUpdated per version");
        Assert.Equal(imports, published);
        // Each event's member count is the count after exactly its version.
        Assert.All(_host.UpdatesOf(ws, "hot"), u => Assert.Equal(u.Version, u.MemberCount));
    }
}
