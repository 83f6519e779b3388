using CohortBridge.Contracts;
using CohortBridge.SegmentService.Projections;
using MassTransit;

namespace CohortBridge.SegmentService.Consumers;

/// <summary>Applies cohort versions to this replica's projection (its own queue per replica).</summary>
public sealed class CohortUpdatedConsumer(ProjectionStore store, ProjectionUpdater updater) : IConsumer<CohortUpdated>
{
    public async Task Consume(ConsumeContext<CohortUpdated> context)
    {
        // Nothing is applied on top of a projection that is still loading from the database.
        await store.WhenLoaded(context.CancellationToken);
        await updater.ApplyAsync(context.Message, context.CancellationToken);
    }
}
