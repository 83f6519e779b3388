using CohortBridge.KeyService.Keys;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.KeyService.Endpoints;

/// <summary>Service-to-service API for the gateway (the service token; never exposed outside the cluster).</summary>
public static class InternalKeyEndpoints
{
    public const int MaxUsageItems = 10_000;

    public static IEndpointRouteBuilder MapInternalKeyEndpoints(this IEndpointRouteBuilder app)
    {
        // Only the gateway calls these, with the service token: without it they would tell anyone which keys are valid.
        var group = app.MapGroup("/internal/import-keys").RequireServiceToken();
        group.MapPost("/validate", ValidateAsync);
        group.MapPost("/usage", ReportUsage);
        return app;
    }

    private static async Task<Results<Ok<ValidateKeyResponse>, ProblemHttpResult>> ValidateAsync(
        HttpRequest request, KeyValidator validator, ILoggerFactory loggers, CancellationToken ct)
    {
        var (body, problem) = await Problems.ReadBodyAsync<ValidateKeyRequest>(request, ct);
        if (problem is not null)
        {
            return problem;
        }

        var validation = await validator.ValidateAsync(body!.Partner, body.PartnerApiKey, body.ClientSecret, ct);
        var result = validation.Result switch
        {
            ValidationResult.Valid => "valid",
            ValidationResult.InvalidPartnerApiKey => "invalid_partner_api_key",
            ValidationResult.InvalidClientSecret => "invalid_client_secret",
            _ => "partner_not_enabled",
        };
        KeyServiceLog.Validated(loggers.CreateLogger(typeof(InternalKeyEndpoints)), Identifiers.IsPartner(body.Partner) ? body.Partner! : "(invalid)", result);
        return TypedResults.Ok(new ValidateKeyResponse(result, validation.WorkspaceId, validation.KeyId));
    }

    /// <summary>The gateway's batched report of key uses (it answers most requests from its cache).</summary>
    private static async Task<Results<Accepted, ProblemHttpResult>> ReportUsage(
        HttpRequest request, KeyUsageRecorder recorder, CancellationToken ct)
    {
        var (body, problem) = await Problems.ReadBodyAsync<KeyUsageReport>(request, ct);
        if (problem is not null)
        {
            return problem;
        }

        if (body!.Items is null || body.Items.Count > MaxUsageItems)
        {
            return Problems.BadRequest($"items must be an array of at most {MaxUsageItems} {{key_id, used_at}} objects.");
        }

        foreach (var item in body.Items)
        {
            recorder.Record(item.KeyId, item.UsedAt.UtcDateTime);
        }

        return TypedResults.Accepted((string?)null);
    }
}
