using CohortBridge.KeyService.Data;
using CohortBridge.KeyService.Keys;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.KeyService.Endpoints;

public static class PartnerEndpoints
{
    public static IEndpointRouteBuilder MapPartnerEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/partners").RequireAdminToken();
        group.MapPost("/", RegisterAsync);
        return app;
    }

    /// <summary>Registers a partner; its API key is in this answer only.</summary>
    private static async Task<Results<Created<RegisterPartnerResponse>, ProblemHttpResult>> RegisterAsync(
        HttpRequest request, KeyRepository repository, TimeProvider time, ILoggerFactory loggers, CancellationToken ct)
    {
        var (body, problem) = await Problems.ReadBodyAsync<RegisterPartnerRequest>(request, ct);
        if (problem is not null)
        {
            return problem;
        }

        if (!Identifiers.IsPartner(body!.Partner))
        {
            return Problems.BadRequest("partner must match [a-z0-9][a-z0-9_-]{0,62}.");
        }

        var displayName = body.DisplayName ?? body.Partner!;
        if (string.IsNullOrWhiteSpace(displayName) || displayName.Length > 200 || !PostgresText.CanStore(displayName))
        {
            return Problems.BadRequest("display_name must be a non-empty string of at most 200 characters, without U+0000.");
        }

        var createdAt = time.GetUtcNow().UtcDateTime;
        GeneratedSecret key;
        InsertOutcome outcome;
        do
        {
            key = KeySecrets.Generate(SecretKind.PartnerApiKey);
            outcome = await repository.InsertPartnerAsync(body.Partner!, displayName, key.Prefix, key.Hash, createdAt, ct);
        }
        while (outcome == InsertOutcome.PrefixTaken);

        if (outcome == InsertOutcome.Duplicate)
        {
            return Problems.Conflict($"Partner '{body.Partner}' already exists.");
        }

        KeyServiceLog.PartnerRegistered(loggers.CreateLogger(typeof(PartnerEndpoints)), body.Partner!);
        return TypedResults.Created(
            $"/admin/partners/{body.Partner}", new RegisterPartnerResponse(body.Partner!, displayName, key.Value, createdAt));
    }
}
