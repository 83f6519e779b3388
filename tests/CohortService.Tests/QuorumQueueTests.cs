using CohortBridge.Testing;

namespace CohortBridge.CohortService.Tests;

/// <summary><c>RabbitMq__QuorumQueues=true</c> (production clusters) on a real broker.</summary>
public sealed class QuorumQueueTests
{
    [Fact]
    public async Task QuorumQueues_On_WorkAndErrorQueuesAreQuorum()
    {
        // Before, only the bus's own queue was set to quorum: the work queues stayed classic, each on one node.
        await using var host = new CohortServiceHost();
        host.Overrides["RabbitMq__QuorumQueues"] = "true";
        await host.StartAsync();

        // A message no consumer can read goes to the error queue, which MassTransit declares on first use.
        await host.Infrastructure.PublishToQueueAsync(host.VirtualHost, "cohorts-user-profiles-changed", "not json",
            new { content_type = "application/vnd.masstransit+json", delivery_mode = 2 });

        string[] expected = ["cohorts-cohort-export-received", "cohorts-user-profiles-changed", "cohorts-user-profiles-changed_error"];
        var types = await Eventually.UntilAsync(async () =>
                (await host.Infrastructure.QueuesAsync(host.VirtualHost)).ToDictionary(
                    q => q.GetProperty("name").GetString()!, q => q.TryGetProperty("type", out var type) ? type.GetString() : null),
            // A queue just declared may not list its type yet.
            t => expected.All(name => t.GetValueOrDefault(name) is not null), TimeSpan.FromSeconds(60), "the work queues and the error queue are declared");

        Assert.All(expected, name => Assert.Equal((name, "quorum"), (name, types[name])));
    }
}
