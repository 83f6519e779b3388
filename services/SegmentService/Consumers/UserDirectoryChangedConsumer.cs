using CohortBridge.Contracts;
using CohortBridge.SegmentService.Projections;
using MassTransit;

namespace CohortBridge.SegmentService.Consumers;

/// <summary>Keeps this replica's identity lookups (external_id / alias / device_id → ordinal) and live users current.</summary>
public sealed class UserDirectoryChangedConsumer(ProjectionStore store, ProjectionUpdater updater) : IConsumer<UserDirectoryChanged>
{
    public async Task Consume(ConsumeContext<UserDirectoryChanged> context)
    {
        await store.WhenLoaded(context.CancellationToken);
        await updater.ApplyAsync(context.Message, context.CancellationToken);
    }
}
