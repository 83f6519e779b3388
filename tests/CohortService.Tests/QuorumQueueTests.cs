using System.Net.Http.Json;
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
        using var http = host.Infrastructure.ManagementClient();
        var vhost = Uri.EscapeDataString(host.VirtualHost);

        // A message no consumer can read goes to the error queue, which MassTransit declares on first use.
        var poison = new
        {
            properties = new { content_type = "application/vnd.masstransit+json", delivery_mode = 2 },
            routing_key = "cohorts-user-profiles-changed",
            payload = "not json",
            payload_encoding = "string",
        };
        (await http.PostAsJsonAsync($"api/exchanges/{vhost}/amq.default/publish", poison)).EnsureSuccessStatusCode();

        string[] expected = ["cohorts-cohort-export-received", "cohorts-user-profiles-changed", "cohorts-user-profiles-changed_error"];
        var types = await Eventually.UntilAsync(async () =>
                (await host.Infrastructure.QueuesAsync(host.VirtualHost)).ToDictionary(
                    q => q.GetProperty("name").GetString()!, q => q.TryGetProperty("type", out var type) ? type.GetString() : null),
            // A queue just declared may not list its type yet.
            t => expected.All(name => t.GetValueOrDefault(name) is not null), TimeSpan.FromSeconds(60), "the work queues and the error queue are declared");

        Assert.All(expected, name => Assert.Equal((name, "quorum"), (name, types[name])));
    }
}
