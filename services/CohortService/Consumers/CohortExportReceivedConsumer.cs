using System.Diagnostics;
using CohortBridge.CohortService.Imports;
using CohortBridge.CohortService.Snapshots;
using CohortBridge.Contracts;
using MassTransit;

namespace CohortBridge.CohortService.Consumers;

/// <summary>
/// Applies partner imports; publishes the resulting CohortUpdated after commit (again on redelivery). Snapshot chunks
/// go to <see cref="SnapshotChunkProcessor"/> (staged one by one, applied when the set is complete and its turn has
/// come); other kinds wait for their turn in the cohort's request order (<see cref="SequenceGate"/>), then go to
/// <see cref="ImportProcessor"/>.
/// </summary>
public sealed class CohortExportReceivedConsumer(ImportProcessor processor, SnapshotChunkProcessor snapshots)
    : IConsumer<CohortExportReceived>
{
    /// <summary>The platform bus retries a message 5 times (ServiceDefaults.Bus); the 6th failure goes to the error queue.</summary>
    private const int LastAttempt = 5;

    public async Task Consume(ConsumeContext<CohortExportReceived> context)
    {
        CohortUpdated? evt;
        try
        {
            if (context.Message.Kind == CohortExportKind.SnapshotChunk)
            {
                evt = await snapshots.ProcessAsync(context.Message, context.CancellationToken);
            }
            else
            {
                evt = await processor.ProcessAsync(context.Message, context.CancellationToken);
            }
        }
        catch (Exception ex) when (context.GetRetryAttempt() >= LastAttempt && ex is not OperationCanceledException)
        {
            // The message is about to land in the error queue: let the status endpoint say so instead of "processing".
            await processor.MarkFailedAsync(context.Message, CancellationToken.None);
            throw;
        }

        if (evt is not null)
        {
            var publishStart = Stopwatch.GetTimestamp();
            await context.Publish(evt, context.CancellationToken);
            ImportMetrics.Publish(ImportMetrics.Since(publishStart));
        }
    }
}
