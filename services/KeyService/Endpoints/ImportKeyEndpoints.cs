using System.Buffers.Binary;
using CohortBridge.Contracts;
using CohortBridge.KeyService.Data;
using CohortBridge.KeyService.Keys;
using CohortBridge.ServiceDefaults;
using MassTransit;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;

namespace CohortBridge.KeyService.Endpoints;

/// <summary>Section <c>Gateway</c>: where partners send their imports (the <c>rest_endpoint</c> of a new key).</summary>
public sealed class GatewayOptions
{
    public const string SectionName = "Gateway";

    public string PublicBaseUrl { get; set; } = "http://localhost:5080";
}

/// <summary>Data import keys of one workspace for one partner: generate, list, invalidate.</summary>
public static class ImportKeyEndpoints
{
    private const int DefaultLimit = 100;
    private const int MaxLimit = 500;
    private static readonly TimeSpan PublishTimeout = TimeSpan.FromSeconds(10);

    public static IEndpointRouteBuilder MapImportKeyEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/workspaces/{workspaceId}/partners/{partner}/import-keys").RequireAdminToken();
        group.MapPost("/", IssueAsync);
        group.MapGet("/", ListAsync);
        group.MapDelete("/{keyId}", InvalidateAsync);
        return app;
    }

    private static ProblemHttpResult? CheckIds(string workspaceId, string partner) =>
        !Identifiers.IsWorkspaceId(workspaceId) ? Problems.BadRequest("workspace_id must match [a-z0-9][a-z0-9-]{0,62}.")
        : !Identifiers.IsPartner(partner) ? Problems.BadRequest("partner must match [a-z0-9][a-z0-9_-]{0,62}.")
        : null;

    /// <summary>Generates a key; <c>client_secret</c> is in this answer only (the database keeps its hash).</summary>
    private static async Task<Results<Created<IssueKeyResponse>, ProblemHttpResult>> IssueAsync(
        string workspaceId, string partner, KeyRepository repository, IPublishEndpoint publish, TimeProvider time,
        IOptions<GatewayOptions> gateway, ILoggerFactory loggers, CancellationToken ct)
    {
        if (CheckIds(workspaceId, partner) is { } invalid)
        {
            return invalid;
        }

        var logger = loggers.CreateLogger(typeof(ImportKeyEndpoints));
        var keyId = Guid.CreateVersion7();
        var createdAt = time.GetUtcNow().UtcDateTime;
        GeneratedSecret secret;
        IssueOutcome outcome;
        do
        {
            secret = KeySecrets.Generate(SecretKind.DataImportKey);
            outcome = await repository.InsertImportKeyAsync(keyId, workspaceId, partner, secret.Prefix, secret.Hash, createdAt, ct);
        }
        while (outcome == IssueOutcome.PrefixTaken);

        switch (outcome)
        {
            case IssueOutcome.UnknownWorkspace:
                return Problems.NotFound($"Workspace '{workspaceId}' does not exist.");
            case IssueOutcome.UnknownPartner:
                return Problems.NotFound($"Partner '{partner}' does not exist.");
        }

        KeyServiceLog.KeyIssued(logger, keyId, workspaceId, partner);
        try
        {
            // Informational event: the key works without it, and the secret cannot be shown a second time, so a
            // broker failure here is logged rather than turned into an error answer.
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(PublishTimeout);
            await publish.Publish(new DataImportKeyIssued
            {
                KeyId = keyId,
                WorkspaceId = workspaceId,
                Partner = partner,
                Prefix = secret.Prefix,
                OccurredAt = createdAt,
            }, timeout.Token);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            KeyServiceLog.PublishFailed(logger, nameof(DataImportKeyIssued), keyId, ex);
        }

        var restEndpoint = gateway.Value.PublicBaseUrl.TrimEnd('/');
        return TypedResults.Created(
            $"/admin/workspaces/{workspaceId}/partners/{partner}/import-keys",
            new IssueKeyResponse(keyId, secret.Value, createdAt, restEndpoint, secret.Prefix));
    }

    /// <summary>The keys (never their secrets), oldest first; <c>limit</c> 1..500 (default 100), <c>cursor</c> from the last page.</summary>
    private static async Task<Results<Ok<Page<ImportKeyResponse>>, ProblemHttpResult>> ListAsync(
        string workspaceId, string partner, string? limit, string? cursor, KeyRepository repository, CancellationToken ct)
    {
        if (CheckIds(workspaceId, partner) is { } invalid)
        {
            return invalid;
        }

        // Parsed here rather than bound as int?, so that a bad value cannot answer 400 before the token check's 401.
        if (!PageLimit.TryParse(limit, MaxLimit, DefaultLimit, out var take))
        {
            return Problems.BadRequest(PageLimit.Invalid(MaxLimit));
        }

        (DateTime CreatedAt, Guid KeyId)? after = null;
        if (!string.IsNullOrEmpty(cursor))
        {
            if (DecodeCursor(cursor) is not { } position)
            {
                return Problems.BadRequest("cursor is not valid.");
            }

            after = position;
        }

        var (workspaceExists, partnerExists) = await repository.ExistsAsync(workspaceId, partner, ct);
        if (!workspaceExists)
        {
            return Problems.NotFound($"Workspace '{workspaceId}' does not exist.");
        }

        if (!partnerExists)
        {
            return Problems.NotFound($"Partner '{partner}' does not exist.");
        }

        var rows = await repository.ListImportKeysAsync(workspaceId, partner, after?.CreatedAt, after?.KeyId, take + 1, ct);
        var items = rows.Take(take)
            .Select(r => new ImportKeyResponse(r.KeyId, r.Prefix, r.CreatedAt, r.LastUsedAt, r.InvalidatedAt))
            .ToList();
        var next = rows.Count > take ? EncodeCursor(rows[take - 1].CreatedAt, rows[take - 1].KeyId) : null;
        return TypedResults.Ok(new Page<ImportKeyResponse>(items, next));
    }

    /// <summary>
    /// Invalidates a key and tells every gateway replica. Idempotent: a repeated DELETE answers 204 and announces the
    /// invalidation again, which heals a first attempt whose event the broker did not confirm.
    /// </summary>
    private static async Task<Results<NoContent, ProblemHttpResult>> InvalidateAsync(
        string workspaceId, string partner, string keyId, KeyRepository repository, IPublishEndpoint publish,
        TimeProvider time, ILoggerFactory loggers, CancellationToken ct)
    {
        if (CheckIds(workspaceId, partner) is { } invalid)
        {
            return invalid;
        }

        if (!Guid.TryParse(keyId, out var id))
        {
            return Problems.BadRequest("key_id must be a UUID.");
        }

        var row = await repository.InvalidateImportKeyAsync(workspaceId, partner, id, time.GetUtcNow().UtcDateTime, ct);
        if (row is null)
        {
            return Problems.NotFound($"Key '{id}' does not exist for workspace '{workspaceId}' and partner '{partner}'.");
        }

        var logger = loggers.CreateLogger(typeof(ImportKeyEndpoints));
        KeyServiceLog.KeyInvalidated(logger, id, workspaceId, partner);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(PublishTimeout);
            await publish.Publish(new DataImportKeyInvalidated
            {
                KeyId = id,
                WorkspaceId = workspaceId,
                Partner = partner,
                Prefix = row.Prefix,
                OccurredAt = row.InvalidatedAt ?? time.GetUtcNow().UtcDateTime,
            }, timeout.Token);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // The key is already refused by KeyService, and gateway caches end it within KeyCache:ValidTtlSeconds;
            // the caller is told to retry so the event gets out and the 1-second promise holds.
            KeyServiceLog.PublishFailed(logger, nameof(DataImportKeyInvalidated), id, ex);
            return Problems.Unavailable("The key is invalidated, but gateways could not be notified yet. Retry the DELETE.");
        }

        return TypedResults.NoContent();
    }

    private static string EncodeCursor(DateTime createdAt, Guid keyId)
    {
        var bytes = new byte[24];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, createdAt.Ticks);
        keyId.TryWriteBytes(bytes.AsSpan(8));
        return WebEncoders.Base64UrlEncode(bytes);
    }

    private static (DateTime, Guid)? DecodeCursor(string cursor)
    {
        try
        {
            var bytes = WebEncoders.Base64UrlDecode(cursor);
            if (bytes.Length != 24)
            {
                return null;
            }

            var ticks = BinaryPrimitives.ReadInt64LittleEndian(bytes);
            return ticks is < 0 || ticks > DateTime.MaxValue.Ticks
                ? null
                : (new DateTime(ticks, DateTimeKind.Utc), new Guid(bytes.AsSpan(8)));
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
