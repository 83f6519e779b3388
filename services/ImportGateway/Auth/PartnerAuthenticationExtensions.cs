using System.Text;
using CohortBridge.ServiceDefaults;
using MassTransit;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Http.Resilience;
using Microsoft.Extensions.Options;
using Polly;

namespace CohortBridge.ImportGateway.Auth;

public static class PartnerAuthenticationExtensions
{
    public const string KeyServiceBaseUrlKey = "KeyService:BaseUrl";
    public const string DefaultKeyServiceBaseUrl = "http://localhost:5081/";

    /// <summary>
    /// Registers <see cref="IPartnerAuthenticator"/> (cache in front of KeyService), <see cref="KeyCacheOptions"/>
    /// (section <c>KeyCache</c>), the typed <see cref="KeyServiceClient"/> (<c>KeyService:BaseUrl</c>) with retry,
    /// timeouts and a circuit breaker, and the batched last-use reporting.
    /// </summary>
    public static IHostApplicationBuilder AddPartnerAuthentication(this IHostApplicationBuilder builder)
    {
        var services = builder.Services;
        services.AddOptions<KeyCacheOptions>()
            .Bind(builder.Configuration.GetSection(KeyCacheOptions.SectionName))
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<DataImportKeyCache>();
        services.TryAddSingleton<KeyUsageReporter>();
        services.AddHostedService(sp => sp.GetRequiredService<KeyUsageReporter>());
        services.TryAddSingleton<IPartnerAuthenticator, CachingPartnerAuthenticator>();

        var baseUrl = builder.Configuration[KeyServiceBaseUrlKey] ?? DefaultKeyServiceBaseUrl;
        services.AddHttpClient<KeyServiceClient>(http =>
            {
                http.BaseAddress = new Uri(baseUrl.EndsWith('/') ? baseUrl : baseUrl + "/");

                // The resilience pipeline below owns the time limits.
                http.Timeout = Timeout.InfiniteTimeSpan;
            })
            .AddServiceTokenHeader()
            .AddResilienceHandler("key-service", (pipeline, context) =>
            {
                var o = context.ServiceProvider.GetRequiredService<IOptions<KeyCacheOptions>>().Value;
                pipeline
                    .AddTimeout(TimeSpan.FromSeconds(o.TotalTimeoutSeconds))
                    .AddRetry(new HttpRetryStrategyOptions
                    {
                        // Validation and usage reports are safe to repeat.
                        MaxRetryAttempts = Math.Max(1, o.Retries),
                        Delay = TimeSpan.FromMilliseconds(100),
                        BackoffType = DelayBackoffType.Exponential,
                        UseJitter = true,
                        ShouldHandle = o.Retries == 0 ? _ => ValueTask.FromResult(false) : new HttpRetryStrategyOptions().ShouldHandle,
                    })
                    .AddCircuitBreaker(new HttpCircuitBreakerStrategyOptions
                    {
                        FailureRatio = 0.5,
                        MinimumThroughput = 5,
                        SamplingDuration = TimeSpan.FromSeconds(10),
                        BreakDuration = TimeSpan.FromSeconds(o.BreakSeconds),
                    })
                    .AddTimeout(TimeSpan.FromSeconds(o.AttemptTimeoutSeconds));
            });
        return builder;
    }

    /// <summary>
    /// Registers the <see cref="CohortBridge.Contracts.DataImportKeyInvalidated"/> consumer on a queue of this replica alone
    /// (<c>gateway-key-invalidated-{machine}-{random}</c>, a MassTransit temporary endpoint: non-durable and exclusive,
    /// so RabbitMQ deletes it with the replica's connection), so every replica evicts every invalidated key.
    /// Call it inside <c>AddPlatformBus(prefix, x => ...)</c>.
    /// </summary>
    public static void AddPartnerAuthenticationConsumers(this IBusRegistrationConfigurator x)
    {
        var name = $"gateway-key-invalidated-{Sanitize(Environment.MachineName)}-{Guid.NewGuid().ToString("N")[..8]}";
        x.AddSingleton(new KeyInvalidationEndpoint(name));
        x.AddReceiveEndpointObserver<KeyInvalidationEndpointObserver>();
        x.AddConsumer<DataImportKeyInvalidatedConsumer>().Endpoint(e =>
        {
            e.Name = name;
            e.Temporary = true;
        });
    }

    private static string Sanitize(string machine)
    {
        var s = new StringBuilder();
        foreach (var c in machine.ToLowerInvariant())
        {
            s.Append(char.IsAsciiLetterOrDigit(c) ? c : '-');
        }

        return s.Length == 0 ? "host" : s.ToString(0, Math.Min(s.Length, 40));
    }
}
