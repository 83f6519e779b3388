using System.Globalization;
using System.Text;
using CohortBridge.ImportGateway.Auth;
using CohortBridge.ServiceDefaults;
using CohortBridge.Testing;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace CohortBridge.KeyService.Tests;

/// <summary>
/// One gateway replica's authentication, in process: AddPartnerAuthentication + AddPlatformBus with the invalidation
/// consumer on the test's vhost, against a real KeyService process. Counts the validation calls it makes and captures
/// everything it logs.
/// </summary>
public sealed class GatewayReplica : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly CapturingLoggerProvider _logs;
    private readonly ValidationCounter _calls;

    private GatewayReplica(IHost host, CapturingLoggerProvider logs, ValidationCounter calls)
    {
        _host = host;
        _logs = logs;
        _calls = calls;
    }

    public IPartnerAuthenticator Authenticator => _host.Services.GetRequiredService<IPartnerAuthenticator>();

    public IServiceProvider Services => _host.Services;

    /// <summary>Calls to KeyService's validation endpoint that reached the HTTP pipeline (one per logical call).</summary>
    public int ValidationCalls => _calls.Count;

    public string Logs => _logs.Text;

    public static async Task<GatewayReplica> StartAsync(
        Infrastructure infrastructure, string virtualHost, Uri keyServiceBaseAddress, IDictionary<string, string?>? settings = null,
        TimeProvider? time = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { EnvironmentName = "Testing" });
        var config = new Dictionary<string, string?>
        {
            ["KeyService:BaseUrl"] = keyServiceBaseAddress.ToString(),
            ["RabbitMq:Host"] = infrastructure.RabbitHost,
            ["RabbitMq:Port"] = infrastructure.RabbitPort.ToString(CultureInfo.InvariantCulture),
            ["RabbitMq:VirtualHost"] = virtualHost,
            ["RabbitMq:Username"] = infrastructure.RabbitUser,
            ["RabbitMq:Password"] = infrastructure.RabbitPassword,
            ["KeyCache:UsageReportIntervalSeconds"] = "0.5",
            ["KeyCache:BreakSeconds"] = "1",
            ["Logging:LogLevel:Default"] = "Trace",
        };
        foreach (var (k, v) in settings ?? new Dictionary<string, string?>())
        {
            config[k] = v;
        }

        builder.Configuration.AddInMemoryCollection(config);
        var logs = new CapturingLoggerProvider();
        builder.Logging.AddProvider(logs);
        var calls = new ValidationCounter();
        builder.Services.ConfigureHttpClientDefaults(b => b.AddHttpMessageHandler(() => new CountingHandler(calls)));

        if (time is not null)
        {
            // AddPartnerAuthentication only adds TimeProvider.System when none is registered.
            builder.Services.AddSingleton(time);
        }

        // As AddServiceDefaults registers it in the gateway: KeyService's internal endpoints require the service token.
        builder.Services.AddSingleton(new ServiceToken(KeyServiceFixture.ServiceToken));
        builder.AddPartnerAuthentication();
        builder.AddPlatformBus("gateway", x => x.AddPartnerAuthenticationConsumers());

        var host = builder.Build();
        await host.StartAsync();
        var health = await host.Services.GetRequiredService<IBusControl>()
            .WaitForHealthStatus(BusHealthStatus.Healthy, TimeSpan.FromSeconds(30));
        Assert.Equal(BusHealthStatus.Healthy, health);

        // The invalidation endpoint clears the cache when it becomes ready; tests start caching after that.
        await Eventually.UntilAsync(
            () => Task.FromResult(logs.Text.Contains("Key invalidation endpoint", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(30), "the invalidation endpoint is ready");
        return new GatewayReplica(host, logs, calls);
    }

    public Task<PartnerAuthResult> AuthenticateAsync(string partner, string? apiKey, string? secret) =>
        Authenticator.AuthenticateAsync(partner, apiKey, secret, CancellationToken.None);

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync(TimeSpan.FromSeconds(10));
        _host.Dispose();
    }

    private sealed class ValidationCounter
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public void Increment() => Interlocked.Increment(ref _count);
    }

    private sealed class CountingHandler(ValidationCounter counter) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri?.AbsolutePath.EndsWith("/validate", StringComparison.Ordinal) == true)
            {
                counter.Increment();
            }

            return base.SendAsync(request, cancellationToken);
        }
    }
}

/// <summary>Real timers, but a wall clock the test can move forward (cache lifetimes without sleeping).</summary>
public sealed class AdjustableClock : TimeProvider
{
    private long _offsetTicks;

    public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + TimeSpan.FromTicks(Interlocked.Read(ref _offsetTicks));

    public void Advance(TimeSpan by) => Interlocked.Add(ref _offsetTicks, by.Ticks);
}

/// <summary>Keeps every log line (message, state values, exception text) of an in-process host.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly StringBuilder _text = new();

    public string Text
    {
        get
        {
            lock (_text)
            {
                return _text.ToString();
            }
        }
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private void Append(string line)
    {
        lock (_text)
        {
            _text.AppendLine(line);
        }
    }

    private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull
        {
            owner.Append($"scope {category}: {state}");
            return null;
        }

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var line = new StringBuilder($"{logLevel} {category}[{eventId.Id}] {formatter(state, exception)}");
            if (state is IEnumerable<KeyValuePair<string, object?>> values)
            {
                foreach (var (k, v) in values)
                {
                    line.Append(CultureInfo.InvariantCulture, $" {k}={v}");
                }
            }

            if (exception is not null)
            {
                line.Append(' ').Append(exception);
            }

            owner.Append(line.ToString());
        }
    }
}
