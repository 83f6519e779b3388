using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Imports;
using CohortBridge.Contracts;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// SequenceGate on a real database: waiters of one cohort see a commit made by another replica (only the database
/// tells them), and share their reads of it instead of each polling on its own.
/// </summary>
public sealed class SequenceGateTests : IAsyncLifetime
{
    private NpgsqlDataSource _dataSource = null!;

    public async Task InitializeAsync()
    {
        _dataSource = await MigratedDataSourceAsync("cohorts_gate");
    }

    public async Task DisposeAsync() => await _dataSource.DisposeAsync();

    private SequenceGate NewGate() =>
        new(_dataSource, Options.Create(new CohortsOptions { SequenceGapTimeout = TimeSpan.FromSeconds(30) }), NullLogger<SequenceGate>.Instance);

    /// <summary>What another replica's commit of the cohort's sequence 1 leaves in the database.</summary>
    private async Task AdvanceElsewhereAsync(CohortExportReceived message, long sequence)
    {
        await using var conn = await _dataSource.OpenConnectionAsync();
        await using var tx = await conn.BeginTransactionAsync();
        await CohortSequences.AdvanceAsync(conn, tx, message.WorkspaceId, message.Partner, message.CohortId, sequence, CancellationToken.None);
        await tx.CommitAsync();
    }

    [Fact]
    public async Task WaitForTurn_ManyWaitersOfOneCohort_ShareTheirDatabaseReads()
    {
        var gate = NewGate();
        var ws = NewWorkspace();
        var first = Changes(ws, "busy", Add("u1")) with { Sequence = 1 };
        // 200 imports queued behind sequence 1, as a busy cohort's burst waits in one process.
        var waiters = Enumerable.Range(2, 200)
            .Select(s => gate.WaitForTurnAsync(first with { ImportId = Guid.NewGuid(), Sequence = s }, CancellationToken.None))
            .ToList();

        // Sequence 1 is applied by another replica after a while: nothing in this process says so.
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.All(waiters, w => Assert.False(w.IsCompleted));
        var readsWhileWaiting = gate.DatabaseReads;
        await AdvanceElsewhereAsync(first, 1);

        // Sequence 2 finds its turn from the database; the others still wait for theirs.
        Assert.True(await waiters[0].WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.All(waiters.Skip(1), w => Assert.False(w.IsCompleted));

        // Each waiter polls on its own back-off (5 ms doubling to 100 ms) and, on its own, reads at least once: 200
        // reads or more. Shared, one read serves them all for 20 ms: at most 101 in those 2 s (measured: about 20).
        Assert.InRange(readsWhileWaiting, 1, 150);

        // The rest are let through by this process's own commits, which tell the sequence: no read needed for that.
        await AdvanceElsewhereAsync(first, 201);
        gate.Advanced(first with { Sequence = 201 });
        Assert.All(await Task.WhenAll(waiters).WaitAsync(TimeSpan.FromSeconds(5)), Assert.True);
    }
}
