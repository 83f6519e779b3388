using CohortBridge.Contracts;
using MassTransit;
using Microsoft.Extensions.Options;

namespace CohortBridge.CohortService.Consumers;

/// <summary>
/// Change sets of one cohort are applied one at a time in this process: messages are partitioned by
/// (workspace, partner, cohort). Across processes the cohort row lock serialises them. The chunks of a snapshot are in
/// the cohort's partition too: they are staged one after the other, and the last one (published by the gateway only
/// after every earlier chunk was confirmed, so it is queued behind them) completes the snapshot before any import of the
/// cohort sent after the snapshot's 202.
/// </summary>
public sealed class CohortExportReceivedConsumerDefinition : ConsumerDefinition<CohortExportReceivedConsumer>
{
    private readonly CohortsOptions _options;

    public CohortExportReceivedConsumerDefinition(IOptions<CohortsOptions> options)
    {
        _options = options.Value;
        ConcurrentMessageLimit = _options.ConcurrentMessageLimit;
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<CohortExportReceivedConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        var partitioner = endpointConfigurator.CreatePartitioner(_options.PartitionCount);
        consumerConfigurator.Message<CohortExportReceived>(m =>
            m.UsePartitioner(partitioner, c => $"{c.Message.WorkspaceId}\n{c.Message.Partner}\n{c.Message.CohortId}"));
    }
}
