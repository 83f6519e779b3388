using CohortBridge.CohortService.Imports;
using CohortBridge.Contracts;
using MassTransit;

namespace CohortBridge.CohortService.Consumers;

/// <summary>
/// Queues every cohort message (not snapshot chunks) in <see cref="ImportBatcher"/> the moment it enters the consumer
/// pipeline, before the cohort partitioner, so that the consumer holding a cohort's partition can apply all of the
/// cohort's waiting change sets in one transaction, in delivery order.
/// </summary>
public sealed class CohortBatchFilter(ImportBatcher batcher) : IFilter<ConsumeContext<CohortExportReceived>>
{
    public Task Send(ConsumeContext<CohortExportReceived> context, IPipe<ConsumeContext<CohortExportReceived>> next)
    {
        if (context.Message.Kind != CohortExportKind.SnapshotChunk)
        {
            batcher.Enqueue(context.Message);
        }

        return next.Send(context);
    }

    public void Probe(ProbeContext context) => context.CreateFilterScope("cohortImportBatch");
}
