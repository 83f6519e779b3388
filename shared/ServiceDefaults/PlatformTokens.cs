using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace CohortBridge.ServiceDefaults;

/// <summary>
/// A bearer token from configuration, compared through SHA-256 digests in constant time. The value may list several
/// tokens separated by commas: all are accepted and the first is sent, so a token is rotated without downtime
/// ("old,new" everywhere, then "new,old", then "new").
/// </summary>
public abstract class BearerToken
{
    private readonly byte[][] _digests;

    protected BearerToken(string tokens)
    {
        var values = tokens.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (values.Length == 0)
        {
            throw new ArgumentException("No token given.", nameof(tokens));
        }

        _digests = [.. values.Select(v => SHA256.HashData(Encoding.UTF8.GetBytes(v)))];
        Header = new AuthenticationHeaderValue("Bearer", values[0]);
    }

    /// <summary>What a service sends to another's endpoints (the first token).</summary>
    public AuthenticationHeaderValue Header { get; }

    public bool Matches(string? authorizationHeader) => Digest(authorizationHeader) is { } presented && Matches(presented);

    internal bool Matches(byte[] presented)
    {
        // Digests have equal length, so FixedTimeEquals compares in constant time whatever the caller sent; every
        // accepted token is compared, so the time does not tell which one matched.
        var matched = false;
        foreach (var digest in _digests)
        {
            matched |= CryptographicOperations.FixedTimeEquals(presented, digest);
        }

        return matched;
    }

    internal static byte[]? Digest(string? authorizationHeader)
    {
        const string scheme = "Bearer ";
        return authorizationHeader is not null && authorizationHeader.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)
            ? SHA256.HashData(Encoding.UTF8.GetBytes(authorizationHeader[scheme.Length..].Trim()))
            : null;
    }
}

/// <summary>The admin token (PLATFORM_ADMIN_TOKEN): every admin API; also accepted wherever the service token is.</summary>
public sealed class AdminToken(string tokens) : BearerToken(tokens)
{
    public const string ConfigKey = "PLATFORM_ADMIN_TOKEN";
    public const string DevelopmentDefault = "dev-admin-token";
}

/// <summary>
/// The service token (PLATFORM_SERVICE_TOKEN): the services' <c>/internal/...</c> endpoints, which the services call
/// with it (<see cref="PlatformTokenExtensions.AddServiceTokenHeader"/>), and SegmentService's audience reads for
/// campaign services. It opens no admin API, so the internet-facing gateway and the campaign services never hold a
/// token that can issue keys or delete users.
/// </summary>
public sealed class ServiceToken(string tokens) : BearerToken(tokens)
{
    public const string ConfigKey = "PLATFORM_SERVICE_TOKEN";
    public const string DevelopmentDefault = "dev-service-token";
}

public static class PlatformTokenExtensions
{
    internal static IServiceCollection AddPlatformTokens(this IServiceCollection services, IConfiguration config, IHostEnvironment env)
    {
        services.AddSingleton(_ => new AdminToken(Configured(config, env, AdminToken.ConfigKey, AdminToken.DevelopmentDefault)));
        services.AddSingleton(_ => new ServiceToken(Configured(config, env, ServiceToken.ConfigKey, ServiceToken.DevelopmentDefault)));
        return services;
    }

    private static string Configured(IConfiguration config, IHostEnvironment env, string key, string developmentDefault)
    {
        var token = config[key];
        if (!string.IsNullOrWhiteSpace(token) && token.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Length > 0)
        {
            return token;
        }

        // The well-known defaults exist for local development only; anywhere else they would be an open door.
        return env.IsDevelopment()
            ? developmentDefault
            : throw new InvalidOperationException($"{key} is not set. Configure it (it is required outside Development).");
    }

    /// <summary>
    /// Resolves the tokens this service uses at start-up, so a missing one stops the process before it serves anything:
    /// the service token always (every service serves or calls internal endpoints), the admin token where the service
    /// has admin APIs.
    /// </summary>
    public static WebApplication EnsurePlatformTokensConfigured(this WebApplication app, bool adminApis)
    {
        _ = app.Services.GetRequiredService<ServiceToken>();
        if (adminApis)
        {
            _ = app.Services.GetRequiredService<AdminToken>();
        }

        return app;
    }

    /// <summary>
    /// Sends this service's service token with every request of the client: the other services' internal endpoints
    /// (import-key validation, directories, members, import status) answer nobody without it.
    /// </summary>
    public static IHttpClientBuilder AddServiceTokenHeader(this IHttpClientBuilder builder) =>
        builder.ConfigureHttpClient((services, http) =>
            http.DefaultRequestHeaders.Authorization = services.GetRequiredService<ServiceToken>().Header);

    /// <summary>Requires <c>Authorization: Bearer &lt;admin token&gt;</c>; otherwise 401 problem details.</summary>
    public static TBuilder RequireAdminToken<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.RequireBearer("A valid admin bearer token is required.", static (services, presented) =>
            services.GetRequiredService<AdminToken>().Matches(presented));

    /// <summary>Requires the service token or the admin token; otherwise 401 problem details.</summary>
    public static TBuilder RequireServiceToken<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.RequireBearer("A valid service or admin bearer token is required.", static (services, presented) =>
            services.GetRequiredService<ServiceToken>().Matches(presented) | services.GetRequiredService<AdminToken>().Matches(presented));

    private static TBuilder RequireBearer<TBuilder>(this TBuilder builder, string detail, Func<IServiceProvider, byte[], bool> accepts)
        where TBuilder : IEndpointConventionBuilder
    {
        builder.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            if (BearerToken.Digest(http.Request.Headers.Authorization.ToString()) is not { } presented || !accepts(http.RequestServices, presented))
            {
                return TypedResults.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Unauthorized", detail: detail);
            }

            return await next(context);
        });
        return builder;
    }
}
