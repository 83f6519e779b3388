using CohortBridge.ImportGateway.Imports;
using CohortBridge.ImportGateway.Snapshots;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Net.Http.Headers;

namespace CohortBridge.ImportGateway.Endpoints;

/// <summary>
/// <c>PUT /partners/{partner}/cohorts/{cohort_id}/members</c>: a streamed full snapshot (shared/API.md).
/// Content type (415), credentials from headers (401/429/503), the cohort id and the <c>Idempotency-Key</c> (400) are
/// checked here, before any of the body is read; the stream
/// itself (read without buffering, chunk, publish <c>SnapshotChunk</c>s in order with a final marker, 202 once the
/// last chunk is confirmed) is <see cref="SnapshotImporter"/>.
/// </summary>
public static class SnapshotEndpoints
{
    public const string NdJson = "application/x-ndjson";
    public const string Csv = "text/csv";

    public static RouteGroupBuilder MapSnapshotEndpoints(this RouteGroupBuilder partnerGroup)
    {
        partnerGroup.MapPut("/cohorts/{cohort_id}/members", PutMembersAsync)
            .WithName("PutCohortSnapshot")
            .WithSummary("Replace a cohort's members with a streamed snapshot (NDJSON or CSV)")
            .Produces<ImportAccepted>(StatusCodes.Status202Accepted)
            .ProducesPartnerErrors(StatusCodes.Status400BadRequest, StatusCodes.Status401Unauthorized, StatusCodes.Status409Conflict, StatusCodes.Status413PayloadTooLarge, StatusCodes.Status415UnsupportedMediaType, StatusCodes.Status429TooManyRequests, StatusCodes.Status503ServiceUnavailable);
        return partnerGroup;
    }

    private static async Task<IResult> PutMembersAsync(
        string partner, HttpContext http, [FromServices] PartnerRequestHandler handler, [FromServices] SnapshotImporter importer)
    {
        var mediaType = MediaTypeHeaderValue.TryParse(http.Request.ContentType, out var media) ? media.MediaType.ToString() : null;
        var isNdJson = string.Equals(mediaType, NdJson, StringComparison.OrdinalIgnoreCase);
        var isCsv = string.Equals(mediaType, Csv, StringComparison.OrdinalIgnoreCase);
        if (!isNdJson && !isCsv)
        {
            return handler.Reject(StatusCodes.Status415UnsupportedMediaType, PartnerMessages.ContentTypeSnapshot);
        }

        var (caller, failure) = await handler.AuthenticateFromHeadersAsync(http, partner);
        if (caller is null)
        {
            return failure!;
        }

        var cohortId = PartnerEndpoints.RawCohortId(http, partner, "members");
        if (!PartnerRequestParser.IsValidCohortId(cohortId))
        {
            return handler.Reject(StatusCodes.Status400BadRequest, PartnerMessages.CohortIdInvalid);
        }

        // The POST endpoints' rule and text; an empty header means no key, as there.
        var key = http.Request.Headers[PartnerRequestHandler.IdempotencyKeyHeader].ToString();
        if (key.Length > 0 && !SnapshotIdempotencyKey.IsValid(key))
        {
            return handler.Reject(StatusCodes.Status400BadRequest, PartnerMessages.IdempotencyKeyInvalid);
        }

        return await importer.ImportAsync(http, caller, cohortId, isCsv, handler, key.Length > 0 ? key : null);
    }
}
