using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Hosting;
using Npgsql;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace CohortBridge.ServiceDefaults;

public static class ServiceDefaultsExtensions
{
    /// <summary>Health checks with this tag decide /health/ready.</summary>
    public const string ReadyTag = "ready";

    /// <summary>
    /// OpenTelemetry (logs, metrics, traces), health checks, snake_case JSON, problem details, request ids and a
    /// default listening port for one CohortBridge service. <paramref name="meterNames"/> are the service's own meters.
    /// </summary>
    public static IHostApplicationBuilder AddServiceDefaults(
        this IHostApplicationBuilder builder, string serviceName, int defaultPort, params string[] meterNames)
    {
        if (builder is WebApplicationBuilder web)
        {
            // ASPNETCORE_URLS / --urls win; otherwise listen on the service's well-known port.
            var urls = builder.Configuration["urls"];
            if (string.IsNullOrEmpty(urls))
            {
                urls = $"http://0.0.0.0:{defaultPort}";
            }

            if (ManagementPort(builder.Configuration) is { } management)
            {
                if (urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Any(u => Uri.TryCreate(u.Replace("://+", "://localhost").Replace("://*", "://localhost"), UriKind.Absolute, out var uri) && uri.Port == management))
                {
                    // The split goes by port: on the service's own port every API would answer 404.
                    throw new InvalidOperationException($"Management:Port {management} is also a service URL ({urls}); choose another port.");
                }

                // Every address, IPv4 and IPv6, as probes and scrapers reach the pod.
                urls += $";http://*:{management}";
            }

            web.WebHost.UseUrls(urls);
        }

        builder.Logging.Configure(o => o.ActivityTrackingOptions =
            ActivityTrackingOptions.TraceId | ActivityTrackingOptions.SpanId);
        builder.Logging.AddSimpleConsole(o =>
        {
            o.IncludeScopes = true;
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
            o.UseUtcTimestamp = true;
        });

        builder.ConfigureOpenTelemetry(serviceName, meterNames);

        builder.Services.AddHealthChecks();
        // Readiness is logged when it changes (HealthTransitionLogger), not by the framework on every failing probe.
        builder.Logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks.DefaultHealthCheckService", LogLevel.None);
        builder.Services.AddSingleton<IHealthCheckPublisher, HealthTransitionLogger>();
        builder.Services.Configure<HealthCheckPublisherOptions>(o =>
        {
            o.Delay = TimeSpan.FromSeconds(1);
            o.Period = TimeSpan.FromSeconds(10);
            o.Predicate = r => r.Tags.Contains(ReadyTag);
        });
        builder.Services.AddProblemDetails();
        builder.Services.AddExceptionHandler<ClientErrorExceptionHandler>();
        builder.Services.ConfigureHttpJsonOptions(o => PlatformJson.Configure(o.SerializerOptions));
        builder.Services.Configure<HostOptions>(o =>
        {
            // Graceful shutdown: let MassTransit finish in-flight messages before the process exits.
            o.ShutdownTimeout = TimeSpan.FromSeconds(builder.Configuration.GetValue("ShutdownTimeoutSeconds", 30));
        });
        builder.Services.AddPlatformTokens(builder.Configuration, builder.Environment);
        return builder;
    }

    private static void ConfigureOpenTelemetry(this IHostApplicationBuilder builder, string serviceName, string[] meterNames)
    {
        builder.Logging.AddOpenTelemetry(o =>
        {
            o.IncludeFormattedMessage = true;
            o.IncludeScopes = true;
        });

        // Export only where a collector is configured; never hard-code one.
        var exporting = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        var otel = builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(serviceName))
            .WithMetrics(m =>
            {
                m.AddAspNetCoreInstrumentation()
                    .AddHttpClientInstrumentation()
                    .AddRuntimeInstrumentation()
                    .AddMeter("MassTransit")
                    .AddMeter("Npgsql")
                    .AddMeter(meterNames)
                    .AddPrometheusExporter();
            })
            .WithTracing(t =>
            {
                t.AddAspNetCoreInstrumentation(o => o.Filter = ctx => !IsOperationsPath(ctx.Request.Path))
                    .AddHttpClientInstrumentation()
                    .AddSource("MassTransit")
                    .AddNpgsql()
                    .AddSource(serviceName);
                if (!exporting)
                {
                    // Spans recorded for nobody cost CPU on hot paths such as membership checks. Dropped spans are
                    // still created where they continue a trace, so logs and messages keep carrying the trace id.
                    t.SetSampler(new AlwaysOffSampler());
                }

                // Otherwise the sampler follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: every trace).
            });

        if (exporting)
        {
            otel.UseOtlpExporter();
        }
    }

    /// <summary>
    /// <c>Management:Port</c>: when set, the service also listens there, and <c>/health/*</c> and <c>/metrics</c> answer
    /// on that port only. The internet-facing gateway needs it: its metrics name the database host, user and the
    /// internal services' addresses.
    /// </summary>
    public static int? ManagementPort(IConfiguration configuration)
    {
        var value = configuration["Management:Port"];
        if (string.IsNullOrWhiteSpace(value))
        {
            return null;
        }

        return int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and <= 65535
            ? port
            : throw new InvalidOperationException($"Management:Port must be a TCP port number (1-65535), not '{value}'.");
    }

    /// <summary>Probes and scrapes: not traced, and served on the management port when there is one.</summary>
    private static bool IsOperationsPath(PathString path) =>
        path.StartsWithSegments("/health") || path.StartsWithSegments("/metrics");

    /// <summary>/health/live, /health/ready, /metrics and the X-Request-Id middleware.</summary>
    public static WebApplication MapDefaultEndpoints(this WebApplication app)
    {
        app.UseMiddleware<RequestIdMiddleware>();
        // Client errors that surface as exceptions answer 4xx (ClientErrorExceptionHandler); the rest a 500 problem.
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        if (ManagementPort(app.Configuration) is { } management)
        {
            // Split by the port the connection came in on, never by the Host header, which the client chooses.
            app.Use((context, next) =>
            {
                if (IsOperationsPath(context.Request.Path) == (context.Connection.LocalPort == management))
                {
                    return next(context);
                }

                // The same 404 as any unknown path: the public port does not tell that these exist.
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            });
        }

        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions
        {
            Predicate = r => r.Tags.Contains(ReadyTag),
            ResultStatusCodes =
            {
                [HealthStatus.Healthy] = StatusCodes.Status200OK,
                [HealthStatus.Degraded] = StatusCodes.Status200OK,
                [HealthStatus.Unhealthy] = StatusCodes.Status503ServiceUnavailable,
            },
        });
        app.MapPrometheusScrapingEndpoint("/metrics");
        return app;
    }
}

/// <summary>The one JSON style of the platform: snake_case, enums as snake_case strings.</summary>
public static class PlatformJson
{
    public static readonly JsonSerializerOptions Options = Configure(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    public static JsonSerializerOptions Configure(JsonSerializerOptions o)
    {
        o.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
        o.DictionaryKeyPolicy = null;
        o.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower));
        o.Converters.Add(new UtcDateTimeOffsetConverter());
        return o;
    }

    /// <summary>
    /// Times leave every API in UTC with <c>Z</c> (API.md), whatever offset the value carries: a timestamptz read by
    /// Npgsql comes with +00:00, which was written as such.
    /// </summary>
    private sealed class UtcDateTimeOffsetConverter : System.Text.Json.Serialization.JsonConverter<DateTimeOffset>
    {
        public override DateTimeOffset Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.GetDateTimeOffset();

        public override void Write(Utf8JsonWriter writer, DateTimeOffset value, JsonSerializerOptions options) =>
            writer.WriteStringValue(value.UtcDateTime);
    }
}
