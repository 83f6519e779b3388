using System.Buffers;
using System.Diagnostics.Metrics;
using System.Security.Cryptography;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.ImportGateway.Auth;
using CohortBridge.ImportGateway.Data;
using CohortBridge.ImportGateway.Endpoints;
using CohortBridge.ImportGateway.Snapshots;
using CohortBridge.ServiceDefaults;
using MassTransit;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using Npgsql;

namespace CohortBridge.ImportGateway.Imports;

/// <summary>Who made an authenticated request.</summary>
public sealed record PartnerCaller(string WorkspaceId, string Partner, string ClientSecret);

/// <summary>
/// The partner request pipeline, in this order (documented in README): 415 content type → 413 size → 400 body not a
/// JSON object → 401/503 credentials → 429 rate limit → 400 field validation → 409 Idempotency-Key → 503 bus → 202.
/// </summary>
public sealed partial class PartnerRequestHandler(
    IPartnerAuthenticator authenticator,
    ClientRateLimiter rateLimiter,
    IdempotencyRepository idempotency,
    ImportRegisterRepository register,
    ImportPublisher publisher,
    GatewayMetrics metrics,
    IOptions<GatewayOptions> options,
    ILogger<PartnerRequestHandler> logger)
{
    public const string IdempotencyKeyHeader = "Idempotency-Key";
    public const string PartnerApiKeyHeader = "X-Partner-Api-Key";

    private readonly GatewayOptions _options = options.Value;

    /// <summary><c>POST /partners/{partner}/cohorts</c> and <c>POST /partners/{partner}/cohorts/users</c>.</summary>
    public async Task<IResult> HandlePostAsync(HttpContext http, string partner, CohortExportKind kind)
    {
        var ct = http.RequestAborted;
        if (!IsJson(http.Request.ContentType))
        {
            return Reject(StatusCodes.Status415UnsupportedMediaType, PartnerMessages.ContentTypeJson);
        }

        if (http.Request.ContentLength > _options.MaxBodyBytes)
        {
            return Reject(StatusCodes.Status413PayloadTooLarge, PartnerMessages.BodyTooLarge(_options.MaxBodyBytes));
        }

        var (buffer, length) = await ReadBodyAsync(http.Request, _options.MaxBodyBytes, ct);
        try
        {
            if (length < 0)
            {
                return Reject(StatusCodes.Status413PayloadTooLarge, PartnerMessages.BodyTooLarge(_options.MaxBodyBytes));
            }

            var request = Parse(buffer.AsSpan(0, length), kind);
            if (request is null)
            {
                return Reject(StatusCodes.Status400BadRequest, PartnerMessages.BodyNotObject);
            }

            var (caller, failure) = await AuthenticateAsync(http, partner, request.PartnerApiKey, request.ClientSecret, ct);
            if (caller is null)
            {
                return failure!;
            }

            if (request.Errors.Count > 0)
            {
                metrics.Rejected(StatusCodes.Status400BadRequest);
                return TypedResults.BadRequest(new PartnerMessage(request.Errors[0], request.Errors.Count > 1 ? request.Errors : null));
            }

            // Only an Idempotency-Key needs the request's digest.
            var bodyHash = http.Request.Headers.ContainsKey(IdempotencyKeyHeader) ? RequestDigest(kind, request) : [];
            var cohortId = request.CohortId!;
            return await AcceptAsync(http, caller, cohortId, kind, bodyHash, importId => new CohortExportReceived
            {
                ImportId = importId,
                WorkspaceId = caller.WorkspaceId,
                Partner = caller.Partner,
                CohortId = cohortId,
                Kind = kind,
                Name = request.Name,
                CreatedAt = request.CreatedAt,
                Changes = kind == CohortExportKind.Changes ? request.Changes : null,
                OccurredAt = DateTimeOffset.UtcNow,
            });
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// What an Idempotency-Key compares: the request as parsed (what it asks to apply), not its bytes. A client that
    /// serializes its retry again (other whitespace, key order or escapes; a rotated client secret) sends the same
    /// request, and got a 409 when the bytes were compared. The record's key already holds the workspace and partner.
    /// </summary>
    private static byte[] RequestDigest(CohortExportKind kind, PartnerRequest request) =>
        SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(
            new AppliedRequest(kind, request.CohortId, request.Name, request.CreatedAt?.UtcDateTime, request.Changes)));

    private sealed record AppliedRequest(
        CohortExportKind Kind, string? CohortId, string? Name, DateTime? CreatedAt, IReadOnlyList<CohortChange> Changes);

    private PartnerRequest? Parse(ReadOnlySpan<byte> body, CohortExportKind kind) =>
        kind == CohortExportKind.Name
            ? PartnerRequestParser.ParseCohortName(body)
            : PartnerRequestParser.ParseCohortChanges(body, _options.MaxIdentifiersPerRequest);

    /// <summary>
    /// Credentials (from the body or, for the extension endpoints, from headers) and then the per-secret rate limit.
    /// Returns the caller, or the response to send.
    /// </summary>
    public async Task<(PartnerCaller? Caller, IResult? Failure)> AuthenticateAsync(
        HttpContext http, string partner, string? partnerApiKey, string? clientSecret, CancellationToken ct)
    {
        if (!PartnerEndpoints.PartnerName().IsMatch(partner))
        {
            // No partner has such a name: KeyService need not be asked.
            return (null, Reject(StatusCodes.Status401Unauthorized, PartnerMessages.InvalidPartnerApiKey));
        }

        var result = await authenticator.AuthenticateAsync(partner, partnerApiKey, clientSecret, ct);
        switch (result.Status)
        {
            case PartnerAuthStatus.Authenticated when result.WorkspaceId is not null && clientSecret is not null:
                break;
            case PartnerAuthStatus.InvalidPartnerApiKey:
                return (null, Reject(StatusCodes.Status401Unauthorized, PartnerMessages.InvalidPartnerApiKey));
            case PartnerAuthStatus.PartnerNotEnabled:
                return (null, Reject(StatusCodes.Status401Unauthorized, PartnerMessages.PartnerNotEnabled(clientSecret)));
            case PartnerAuthStatus.Unavailable:
                return (null, Unavailable(http));
            default:
                return (null, Reject(StatusCodes.Status401Unauthorized, PartnerMessages.InvalidClientSecret));
        }

        if (rateLimiter.TryAcquire(clientSecret) is { } retryAfter)
        {
            http.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return (null, Reject(StatusCodes.Status429TooManyRequests, PartnerMessages.RateLimited));
        }

        return (new PartnerCaller(result.WorkspaceId, partner, clientSecret), null);
    }

    /// <summary>Credentials of the extension endpoints: <c>X-Partner-Api-Key</c> and <c>Authorization: Bearer &lt;client_secret&gt;</c>.</summary>
    public Task<(PartnerCaller? Caller, IResult? Failure)> AuthenticateFromHeadersAsync(HttpContext http, string partner)
    {
        var apiKey = http.Request.Headers[PartnerApiKeyHeader].ToString();
        var authorization = http.Request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        var secret = authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) ? authorization[scheme.Length..].Trim() : null;
        return AuthenticateAsync(http, partner, apiKey.Length > 0 ? apiKey : null, string.IsNullOrEmpty(secret) ? null : secret, http.RequestAborted);
    }

    /// <summary>
    /// Idempotency-Key (when sent), publish with confirm, register, 202. <paramref name="bodyHash"/> identifies the
    /// request for Idempotency-Key comparison.
    /// </summary>
    public async Task<IResult> AcceptAsync(
        HttpContext http, PartnerCaller caller, string cohortId, CohortExportKind kind, byte[] bodyHash,
        Func<Guid, CohortExportReceived> createMessage)
    {
        var ct = http.RequestAborted;
        var key = http.Request.Headers[IdempotencyKeyHeader].ToString();
        var useKey = key.Length > 0;
        if (useKey && !SnapshotIdempotencyKey.IsValid(key))
        {
            return Reject(StatusCodes.Status400BadRequest, PartnerMessages.IdempotencyKeyInvalid);
        }

        Guid importId;
        DateTimeOffset? firstClaimedAt = null;
        if (useKey)
        {
            IdempotencyClaim claim;
            try
            {
                claim = await ClaimWithWaitAsync(caller, key, bodyHash, ct);
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
            {
                Log.DatabaseUnavailable(logger, ex.GetType().Name);
                return Unavailable(http);
            }

            switch (claim.Outcome)
            {
                case ClaimOutcome.BodyMismatch:
                    return Reject(StatusCodes.Status409Conflict, PartnerMessages.IdempotencyConflict);
                case ClaimOutcome.InProgress:
                    http.Response.Headers.RetryAfter = "1";
                    return Reject(StatusCodes.Status409Conflict, PartnerMessages.IdempotencyInProgress);
                case ClaimOutcome.Completed:
                    http.Response.Headers["Idempotent-Replayed"] = "true";
                    return Results.Content(claim.ResponseBody, "application/json", System.Text.Encoding.UTF8, claim.ResponseStatus ?? StatusCodes.Status202Accepted);
            }

            importId = claim.ImportId;
            firstClaimedAt = claim.FirstClaimedAt;
        }
        else
        {
            importId = NewId.NextGuid();
        }

        // A retry of a keyed request whose first publish was not confirmed (503) publishes the same import again: it
        // carries the first claim's time, so every copy of an import has the same time. CohortService refuses a copy
        // without an import row by that time (Cohorts:ImportRetention); a later time on a later copy would let it
        // apply again after the row was deleted.
        var message = firstClaimedAt is { } first ? createMessage(importId) with { OccurredAt = first } : createMessage(importId);
        try
        {
            await publisher.PublishAsync(message, ct);
        }
        catch (OperationCanceledException) when (useKey)
        {
            // The client went away mid-publish: free the key at once so that its retry need not wait for the lease.
            await BestEffortAsync(() => idempotency.FailAsync(caller.WorkspaceId, caller.Partner, key, CancellationToken.None));
            throw;
        }
        catch (BusUnavailableException)
        {
            if (useKey)
            {
                await BestEffortAsync(() => idempotency.FailAsync(caller.WorkspaceId, caller.Partner, key, CancellationToken.None));
            }

            metrics.Rejected(StatusCodes.Status503ServiceUnavailable);
            return Unavailable(http);
        }

        // The import is on the bus from here on: the answer is 202 whatever the bookkeeping below meets.
        var accepted = new ImportAccepted(PartnerMessages.Success, importId);
        await BestEffortAsync(() => register.RecordAsync(
            importId, caller.WorkspaceId, caller.Partner, cohortId, KindName(kind), message.OccurredAt, CancellationToken.None));
        if (useKey)
        {
            var stored = JsonSerializer.Serialize(accepted, PlatformJson.Options);
            await BestEffortAsync(() => idempotency.CompleteAsync(caller.WorkspaceId, caller.Partner, key, StatusCodes.Status202Accepted, stored, CancellationToken.None));
        }

        metrics.Accepted(kind);
        Log.Accepted(logger, importId, caller.WorkspaceId, caller.Partner, KindName(kind));
        return TypedResults.Json(accepted, PlatformJson.Options, statusCode: StatusCodes.Status202Accepted);
    }

    public IResult Unavailable(HttpContext http)
    {
        http.Response.Headers.RetryAfter = _options.UnavailableRetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return Reject(StatusCodes.Status503ServiceUnavailable, PartnerMessages.Unavailable);
    }

    public IResult Reject(int status, string message)
    {
        metrics.Rejected(status);
        return TypedResults.Json(new PartnerMessage(message), PlatformJson.Options, statusCode: status);
    }

    public static string KindName(CohortExportKind kind) => kind switch
    {
        CohortExportKind.Name => "name",
        CohortExportKind.Changes => "changes",
        CohortExportKind.SnapshotChunk => "snapshot",
        _ => "archive",
    };

    /// <summary>application/json, any parameters (charset), any case.</summary>
    public static bool IsJson(string? contentType) =>
        MediaTypeHeaderValue.TryParse(contentType, out var media)
        && media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Claims the key; when a concurrent duplicate holds it, waits (bounded by the publish timeout) for its outcome so
    /// that a client's quick retry gets the first response rather than a conflict.
    /// </summary>
    private async Task<IdempotencyClaim> ClaimWithWaitAsync(PartnerCaller caller, string key, byte[] bodyHash, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + _options.PublishTimeout + TimeSpan.FromSeconds(1);
        var delay = TimeSpan.FromMilliseconds(25);
        while (true)
        {
            var claim = await idempotency.ClaimAsync(
                caller.WorkspaceId, caller.Partner, key, bodyHash, NewId.NextGuid(), _options.IdempotencyLease, ct);
            if (claim.Outcome != ClaimOutcome.InProgress || DateTime.UtcNow > deadline)
            {
                return claim;
            }

            await Task.Delay(delay, ct);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 250));
        }
    }

    private async Task BestEffortAsync(Func<Task> action)
    {
        try
        {
            await action();
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or InvalidOperationException)
        {
            Log.BookkeepingFailed(logger, ex.GetType().Name);
        }
    }

    /// <summary>
    /// Reads the body into a pooled buffer, stopping as soon as it exceeds <paramref name="limit"/> (length -1 then):
    /// a chunked body is never read past the limit.
    /// </summary>
    private static async Task<(byte[] Buffer, int Length)> ReadBodyAsync(HttpRequest request, long limit, CancellationToken ct)
    {
        var initial = (int)Math.Min(request.ContentLength ?? 16 * 1024, limit) + 1;
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(initial, 256));
        var length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                var bigger = ArrayPool<byte>.Shared.Rent((int)Math.Min((long)buffer.Length * 2, limit + 1));
                buffer.AsSpan(0, length).CopyTo(bigger);
                ArrayPool<byte>.Shared.Return(buffer);
                buffer = bigger;
            }

            var read = await request.Body.ReadAsync(buffer.AsMemory(length), ct);
            if (read == 0)
            {
                return (buffer, length);
            }

            length += read;
            if (length > limit)
            {
                return (buffer, -1);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 10, Level = LogLevel.Debug,
            Message = "Accepted import {ImportId} ({Kind}) of workspace {WorkspaceId}, partner {Partner}")]
        public static partial void Accepted(ILogger logger, Guid importId, string workspaceId, string partner, string kind);

        [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "Gateway database unavailable ({Error})")]
        public static partial void DatabaseUnavailable(ILogger logger, string error);

        [LoggerMessage(EventId = 12, Level = LogLevel.Warning,
            Message = "Bookkeeping after a confirmed publish failed ({Error}); the import stands")]
        public static partial void BookkeepingFailed(ILogger logger, string error);
    }
}

/// <summary>The gateway's own meter: accepted imports by kind, rejections by status code.</summary>
public sealed class GatewayMetrics
{
    private readonly Counter<long> _accepted;
    private readonly Counter<long> _rejected;

    public GatewayMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(ImportGatewayHosting.MeterName);
        _accepted = meter.CreateCounter<long>("cohortbridge.gateway.imports.accepted", description: "Imports accepted (202)");
        _rejected = meter.CreateCounter<long>("cohortbridge.gateway.requests.rejected", description: "Partner requests answered with an error");
    }

    public void Accepted(CohortExportKind kind) =>
        _accepted.Add(1, new KeyValuePair<string, object?>("kind", PartnerRequestHandler.KindName(kind)));

    public void Rejected(int status) =>
        _rejected.Add(1, new KeyValuePair<string, object?>("http.response.status_code", status));
}
