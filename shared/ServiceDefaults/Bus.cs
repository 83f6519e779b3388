using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace CohortBridge.ServiceDefaults;

/// <summary>Broker settings, section <c>RabbitMq</c> (environment: <c>RabbitMq__Host</c>, ...).</summary>
public sealed class RabbitMqOptions
{
    public const string SectionName = "RabbitMq";

    public string Host { get; set; } = "localhost";
    public ushort Port { get; set; } = 5672;
    public string VirtualHost { get; set; } = "/";
    public string Username { get; set; } = "guest";
    public string Password { get; set; } = "guest";

    /// <summary>Declares every receive endpoint's queue as a quorum queue (production clusters); off for single-node development brokers.</summary>
    public bool QuorumQueues { get; set; }
}

/// <summary>
/// A message that no retry can make succeed: the platform bus moves it to the error queue at once, with this
/// exception's message in its fault headers for the operator.
/// </summary>
public class UnretriableMessageException(string message) : Exception(message);

public static class Bus
{
    /// <summary>
    /// MassTransit on RabbitMQ with publisher confirms, kebab-case endpoint names prefixed by
    /// <paramref name="endpointPrefix"/> (so two services' consumers of one event get their own queues), and the
    /// bus health check tagged for /health/ready.
    /// </summary>
    public static IHostApplicationBuilder AddPlatformBus(
        this IHostApplicationBuilder builder,
        string endpointPrefix,
        Action<IBusRegistrationConfigurator>? configureConsumers = null,
        Action<IBusRegistrationContext, IRabbitMqBusFactoryConfigurator>? configureBus = null)
    {
        var options = builder.Configuration.GetSection(RabbitMqOptions.SectionName).Get<RabbitMqOptions>() ?? new RabbitMqOptions();
        builder.Services.Configure<MassTransitHostOptions>(o =>
        {
            // Readiness must reflect the broker, but a broker outage at start must not crash the process.
            o.WaitUntilStarted = false;
            o.StopTimeout = TimeSpan.FromSeconds(25);
        });

        builder.Services.AddMassTransit(x =>
        {
            x.SetEndpointNameFormatter(new KebabCaseEndpointNameFormatter(endpointPrefix, false));

            // MassTransit 8.4+ reports usage telemetry to masstransit.io by default: a customer's deployment must not
            // call a third party on its own (and behind an egress firewall every report logged a warning).
            x.ConfigureUsageTelemetryOptions(o => o.Enabled = false);
            configureConsumers?.Invoke(x);
            if (options.QuorumQueues)
            {
                // Per endpoint: the bus configurator's SetQuorumQueue shapes only the bus's own queue, so the work
                // queues stayed classic, on one node of the cluster.
                x.AddRabbitMqConfigureEndpointsCallback((_, _, e) => e.SetQuorumQueue());
            }

            x.UsingRabbitMq((context, cfg) =>
            {
                cfg.Host(options.Host, options.Port, options.VirtualHost, h =>
                {
                    h.Username(options.Username);
                    h.Password(options.Password);
                    h.PublisherConfirmation = true;
                });
                cfg.UseMessageRetry(r =>
                {
                    r.Exponential(5, TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(10), TimeSpan.FromMilliseconds(200));
                    r.Ignore<UnretriableMessageException>();
                });
                configureBus?.Invoke(context, cfg);
                cfg.ConfigureEndpoints(context);
            });
        });

        // MassTransit registers its bus health check with the "ready" tag.
        return builder;
    }
}
