using Microsoft.Extensions.Options;
using MassTransit;

namespace CohortBridge.CohortService.Consumers;

/// <summary>
/// Up to <see cref="CohortsOptions.ConcurrentMessageLimit"/> imports at once, of any cohorts, in every replica. Order
/// within one cohort does not depend on delivery order (MassTransit dispatches deliveries concurrently, and competing
/// replicas share the queue): each import carries the gateway's per-cohort sequence and waits for its predecessor
/// (<see cref="Imports.SequenceGate"/>), and the cohort row lock serialises the writes. There is deliberately no
/// per-cohort partitioner here: an import waiting for its predecessor inside a partition would block that very
/// predecessor behind it.
/// </summary>
public sealed class CohortExportReceivedConsumerDefinition : ConsumerDefinition<CohortExportReceivedConsumer>
{
    public CohortExportReceivedConsumerDefinition(IOptions<CohortsOptions> options)
    {
        ConcurrentMessageLimit = options.Value.ConcurrentMessageLimit;
    }
}
