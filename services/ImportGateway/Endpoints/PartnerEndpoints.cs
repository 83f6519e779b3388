using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using CohortBridge.Contracts;
using CohortBridge.ImportGateway.Data;
using CohortBridge.ImportGateway.Imports;
using CohortBridge.ImportGateway.Status;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.ImportGateway.Endpoints;

/// <summary>The partner API (shared/API.md): the two compatible POST endpoints and the extensions.</summary>
public static partial class PartnerEndpoints
{
    public const string Tag = "Partner API";

    [GeneratedRegex("^[a-z0-9][a-z0-9_-]{0,62}$", RegexOptions.CultureInvariant)]
    internal static partial Regex PartnerName();

    public static IEndpointRouteBuilder MapPartnerEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/partners/{partner}").WithTags(Tag);

        group.MapPost("/cohorts", PostCohortNameAsync)
            .WithName("CreateOrRenameCohort")
            .WithSummary("Create or rename a cohort")
            .Produces<ImportAccepted>(StatusCodes.Status202Accepted)
            .ProducesPartnerErrors(StatusCodes.Status400BadRequest, StatusCodes.Status401Unauthorized, StatusCodes.Status409Conflict, StatusCodes.Status413PayloadTooLarge, StatusCodes.Status415UnsupportedMediaType, StatusCodes.Status429TooManyRequests, StatusCodes.Status503ServiceUnavailable);

        group.MapPost("/cohorts/users", PostCohortChangesAsync)
            .WithName("ChangeCohortUsers")
            .WithSummary("Add or remove users of a cohort")
            .Produces<ImportAccepted>(StatusCodes.Status202Accepted)
            .ProducesPartnerErrors(StatusCodes.Status400BadRequest, StatusCodes.Status401Unauthorized, StatusCodes.Status409Conflict, StatusCodes.Status413PayloadTooLarge, StatusCodes.Status415UnsupportedMediaType, StatusCodes.Status429TooManyRequests, StatusCodes.Status503ServiceUnavailable);

        group.MapGet("/imports/{import_id}", GetImportStatusAsync)
            .WithName("GetImportStatus")
            .WithSummary("Status and match statistics of an import")
            .Produces<ImportStatusResponse>()
            .ProducesPartnerErrors(StatusCodes.Status401Unauthorized, StatusCodes.Status404NotFound, StatusCodes.Status429TooManyRequests, StatusCodes.Status503ServiceUnavailable);

        group.MapDelete("/cohorts/{cohort_id}", ArchiveCohortAsync)
            .WithName("ArchiveCohort")
            .WithSummary("Archive a cohort")
            .Produces<ImportAccepted>(StatusCodes.Status202Accepted)
            .ProducesPartnerErrors(StatusCodes.Status400BadRequest, StatusCodes.Status401Unauthorized, StatusCodes.Status429TooManyRequests, StatusCodes.Status503ServiceUnavailable);

        group.MapSnapshotEndpoints();
        return app;
    }

    /// <summary>Documents the partner-shaped <c>{"message"}</c> error answers of an endpoint.</summary>
    internal static RouteHandlerBuilder ProducesPartnerErrors(this RouteHandlerBuilder builder, params int[] statusCodes)
    {
        foreach (var statusCode in statusCodes)
        {
            builder.Produces<PartnerMessage>(statusCode);
        }

        return builder;
    }

    private static Task<IResult> PostCohortNameAsync(string partner, HttpContext http, [FromServices] PartnerRequestHandler handler) =>
        handler.HandlePostAsync(http, partner, CohortExportKind.Name);

    private static Task<IResult> PostCohortChangesAsync(string partner, HttpContext http, [FromServices] PartnerRequestHandler handler) =>
        handler.HandlePostAsync(http, partner, CohortExportKind.Changes);

    private static async Task<IResult> GetImportStatusAsync(
        string partner,
        [FromRoute(Name = "import_id")] string importId,
        HttpContext http,
        [FromServices] PartnerRequestHandler handler,
        [FromServices] ImportRegisterRepository register,
        [FromServices] CohortServiceClient cohorts,
        [FromServices] IOptions<GatewayOptions> options)
    {
        var (caller, failure) = await handler.AuthenticateFromHeadersAsync(http, partner);
        if (caller is null)
        {
            return failure!;
        }

        var ct = http.RequestAborted;
        if (!Guid.TryParse(importId, out var id))
        {
            return NotFound(handler);
        }

        try
        {
            // Past the retention an import is gone for the partner, also before the purge deletes the register row
            // and while CohortService still keeps its own (until its next sweep, or for good when it never finished).
            var retention = options.Value.ImportRetention;
            bool Expired(DateTimeOffset acceptedAt) => retention > TimeSpan.Zero && acceptedAt < DateTimeOffset.UtcNow - retention;
            var accepted = await register.FindAsync(id, caller.WorkspaceId, caller.Partner, ct);
            if (accepted is not null && Expired(AsUtc(accepted.AcceptedAt)))
            {
                accepted = null;
            }

            var known = await cohorts.GetImportAsync(caller.WorkspaceId, id, ct);
            if (known?.AcceptedAt is { } knownAcceptedAt && Expired(knownAcceptedAt))
            {
                known = null;
            }

            if (known is not null && (accepted is not null || known.Partner == caller.Partner))
            {
                return TypedResults.Ok(new ImportStatusResponse
                {
                    ImportId = id,
                    CohortId = known.CohortId ?? accepted?.CohortId ?? "",
                    Status = known.Status,
                    Received = known.Received,
                    Matched = known.Matched,
                    Added = known.Added,
                    Removed = known.Removed,
                    Unmatched = known.Unmatched ?? [],
                    UnmatchedSample = known.UnmatchedSample ?? [],
                    CohortVersion = known.CohortVersion,
                    // PlatformJson writes every DateTimeOffset in UTC with 'Z'.
                    AcceptedAt = accepted is not null ? AsUtc(accepted.AcceptedAt) : known.AcceptedAt,
                    CompletedAt = known.CompletedAt,
                    Error = known.Error,
                    Processed = known.Processed,
                });
            }

            if (accepted is null)
            {
                return NotFound(handler);
            }

            // Accepted by the gateway, not yet picked up by CohortService.
            return TypedResults.Ok(new ImportStatusResponse
            {
                ImportId = id,
                CohortId = accepted.CohortId,
                Status = "accepted",
                AcceptedAt = AsUtc(accepted.AcceptedAt),
            });
        }
        catch (Exception ex) when (ex is NpgsqlException or CohortServiceUnavailableException)
        {
            return handler.Unavailable(http);
        }
    }

    private static async Task<IResult> ArchiveCohortAsync(
        string partner, HttpContext http, [FromServices] PartnerRequestHandler handler)
    {
        var (caller, failure) = await handler.AuthenticateFromHeadersAsync(http, partner);
        if (caller is null)
        {
            return failure!;
        }

        var cohortId = RawCohortId(http, partner);
        if (!PartnerRequestParser.IsValidCohortId(cohortId))
        {
            return handler.Reject(StatusCodes.Status400BadRequest, PartnerMessages.CohortIdInvalid);
        }

        var requestHash = SHA256.HashData(Encoding.UTF8.GetBytes("DELETE\n" + cohortId));
        return await handler.AcceptAsync(http, caller, cohortId, CohortExportKind.Archive, requestHash, importId => new CohortExportReceived
        {
            ImportId = importId,
            WorkspaceId = caller.WorkspaceId,
            Partner = caller.Partner,
            CohortId = cohortId,
            Kind = CohortExportKind.Archive,
            Archive = true,
            OccurredAt = DateTimeOffset.UtcNow,
        });
    }

    private static IResult NotFound(PartnerRequestHandler handler) =>
        handler.Reject(StatusCodes.Status404NotFound, PartnerMessages.ImportNotFound);

    private static DateTimeOffset AsUtc(DateTime value) =>
        new(DateTime.SpecifyKind(value, DateTimeKind.Utc));

    /// <summary>
    /// The cohort id of <c>/partners/{partner}/cohorts/{cohort_id}</c> (then <paramref name="suffix"/>, if any), read
    /// from the raw request target and percent-decoded once: routing leaves "%2F" encoded in route values, and cohort
    /// ids may contain '/'. Null when the raw target does not have exactly that shape, so that it cannot name another
    /// cohort than the routed path: dot segments (Kestrel resolves <c>x/../y</c> before routing) or an absolute-form
    /// target (<c>http://host/partners/...</c>, RFC 9112) laid out otherwise.
    /// </summary>
    internal static string? RawCohortId(HttpContext http, string partner, string? suffix = null)
    {
        var raw = http.Features.Get<IHttpRequestFeature>()?.RawTarget ?? http.Request.Path.ToString();
        var query = raw.IndexOf('?', StringComparison.Ordinal);
        if (query >= 0)
        {
            raw = raw[..query];
        }

        if (!raw.StartsWith('/'))
        {
            var authority = raw.IndexOf("://", StringComparison.Ordinal);
            var path = authority < 0 ? -1 : raw.IndexOf('/', authority + 3);
            if (path < 0)
            {
                return null;
            }

            raw = raw[path..];
        }

        // A trailing slash routes like none.
        var segments = raw[1..].TrimEnd('/').Split('/').Select(Uri.UnescapeDataString).ToArray();
        var shaped = segments.Length == (suffix is null ? 4 : 5)
                     && string.Equals(segments[0], "partners", StringComparison.OrdinalIgnoreCase)
                     && string.Equals(segments[1], partner, StringComparison.Ordinal)
                     && string.Equals(segments[2], "cohorts", StringComparison.OrdinalIgnoreCase)
                     && (suffix is null || string.Equals(segments[4], suffix, StringComparison.OrdinalIgnoreCase))
                     && segments[3] is not ("." or "..");
        return shaped ? segments[3] : null;
    }
}
