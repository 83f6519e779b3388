using CohortBridge.CohortService.Imports;
using CohortBridge.Contracts;
using MassTransit;

namespace CohortBridge.CohortService.Consumers;

/// <summary>Applies partner imports; publishes the resulting CohortUpdated after commit (again on redelivery).</summary>
public sealed class CohortExportReceivedConsumer(ImportProcessor processor) : IConsumer<CohortExportReceived>
{
    /// <summary>The platform bus retries a message 5 times (ServiceDefaults.Bus); the 6th failure goes to the error queue.</summary>
    private const int LastAttempt = 5;

    public async Task Consume(ConsumeContext<CohortExportReceived> context)
    {
        CohortUpdated? evt;
        try
        {
            evt = await processor.ProcessAsync(context.Message, context.CancellationToken);
        }
        catch (Exception ex) when (context.GetRetryAttempt() >= LastAttempt && ex is not OperationCanceledException)
        {
            // The message is about to land in the error queue: let the status endpoint say so instead of "processing".
            await processor.MarkFailedAsync(context.Message, CancellationToken.None);
            throw;
        }

        if (evt is not null)
        {
            await context.Publish(evt, context.CancellationToken);
        }
    }
}
