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
/// The admin bearer token (PLATFORM_ADMIN_TOKEN), compared through a SHA-256 digest in constant time. It also guards the
/// services' <c>/internal/...</c> endpoints, which the services call with it (<see cref="AdminTokenExtensions.AddAdminTokenHeader"/>).
/// </summary>
public sealed class AdminToken
{
    public const string ConfigKey = "PLATFORM_ADMIN_TOKEN";
    public const string DevelopmentDefault = "dev-admin-token";

    private readonly byte[] _digest;

    public AdminToken(string token)
    {
        _digest = SHA256.HashData(Encoding.UTF8.GetBytes(token));
        Header = new AuthenticationHeaderValue("Bearer", token);
    }

    /// <summary>What a service sends to another's internal endpoints.</summary>
    public AuthenticationHeaderValue Header { get; }

    public bool Matches(string? authorizationHeader)
    {
        const string scheme = "Bearer ";
        if (authorizationHeader is null || !authorizationHeader.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        // Digests have equal length, so FixedTimeEquals compares in constant time whatever the caller sent.
        var presented = SHA256.HashData(Encoding.UTF8.GetBytes(authorizationHeader[scheme.Length..].Trim()));
        return CryptographicOperations.FixedTimeEquals(presented, _digest);
    }
}

public static class AdminTokenExtensions
{
    internal static IServiceCollection AddAdminToken(this IServiceCollection services, IConfiguration config, IHostEnvironment env)
    {
        services.AddSingleton(_ =>
        {
            var token = config[AdminToken.ConfigKey];
            if (string.IsNullOrWhiteSpace(token))
            {
                // The well-known default exists for local development only; anywhere else it would be an open door.
                if (!env.IsDevelopment())
                {
                    throw new InvalidOperationException(
                        $"{AdminToken.ConfigKey} is not set. Configure an admin token (it is required outside Development).");
                }

                token = AdminToken.DevelopmentDefault;
            }

            return new AdminToken(token);
        });
        return services;
    }

    /// <summary>Resolve the token at start-up so a missing one stops the process before it serves anything.</summary>
    public static WebApplication EnsureAdminTokenConfigured(this WebApplication app)
    {
        _ = app.Services.GetRequiredService<AdminToken>();
        return app;
    }

    /// <summary>
    /// Sends this service's admin token with every request of the client: the other services' internal endpoints
    /// (import-key validation, directories, members, import status) answer nobody without it.
    /// </summary>
    public static IHttpClientBuilder AddAdminTokenHeader(this IHttpClientBuilder builder) =>
        builder.ConfigureHttpClient((services, http) =>
            http.DefaultRequestHeaders.Authorization = services.GetRequiredService<AdminToken>().Header);

    /// <summary>Requires <c>Authorization: Bearer &lt;admin token&gt;</c>; otherwise 401 problem details.</summary>
    public static TBuilder RequireAdminToken<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder
    {
        builder.AddEndpointFilter(async (context, next) =>
        {
            var token = context.HttpContext.RequestServices.GetRequiredService<AdminToken>();
            if (!token.Matches(context.HttpContext.Request.Headers.Authorization.ToString()))
            {
                return TypedResults.Problem(
                    statusCode: StatusCodes.Status401Unauthorized,
                    title: "Unauthorized",
                    detail: "A valid admin bearer token is required.");
            }

            return await next(context);
        });
        return builder;
    }
}
