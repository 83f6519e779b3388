using CohortBridge.CohortService.Outbox;
using Dapper;
using MassTransit;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>The outbox dispatcher against a real database (publishing to an in-memory bus: no consumer is involved).</summary>
public sealed class OutboxDispatcherTests
{
    [Fact]
    public async Task DispatchOnce_AnotherReplicaPublishingDirectoryRows_WaitsUntilItCommits()
    {
        // Each UserDirectoryChanged carries the identity as read when published, and SegmentService keeps the last one
        // it receives: two replicas reading and publishing at once could deliver the older read last.
        await using var dataSource = await MigratedDataSourceAsync("cohorts_outbox");
        await using (var conn = await dataSource.OpenConnectionAsync())
        {
            await conn.ExecuteAsync("INSERT INTO outbox (workspace_id, ordinals) VALUES ('ws-outbox', '{1}')");
        }

        var bus = Bus.Factory.CreateUsingInMemory(_ => { });
        await bus.StartAsync();
        try
        {
            var dispatcher = new OutboxDispatcher(dataSource, bus, new OutboxSignal(), Options.Create(new CohortsOptions()),
                NullLogger<OutboxDispatcher>.Instance);

            // Another replica is between reading its directory rows and committing their deletion.
            await using var other = await dataSource.OpenConnectionAsync();
            await using var otherTx = await other.BeginTransactionAsync();
            await other.ExecuteAsync("SELECT pg_advisory_xact_lock(@key)", new { key = OutboxRepository.DirectoryLockKey }, otherTx);

            var dispatch = dispatcher.DispatchOnceAsync(CancellationToken.None);
            Assert.NotSame(dispatch, await Task.WhenAny(dispatch, Task.Delay(TimeSpan.FromSeconds(1))));

            await otherTx.CommitAsync();
            Assert.True(await dispatch.WaitAsync(TimeSpan.FromSeconds(30)));
            await using var check = await dataSource.OpenConnectionAsync();
            Assert.Equal(0, await check.ExecuteScalarAsync<int>("SELECT count(*) FROM outbox"));
        }
        finally
        {
            await bus.StopAsync();
        }
    }
}
