using CohortBridge.ImportGateway.Imports;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Net.Http.Headers;

namespace CohortBridge.ImportGateway.Endpoints;

/// <summary>
/// <c>PUT /partners/{partner}/cohorts/{cohort_id}/members</c>: a streamed full snapshot (shared/API.md).
/// Authentication, routing and content-type checks are in place; the streaming pipeline (read without buffering,
/// chunk, publish <c>SnapshotChunk</c>s in order with a final marker) belongs to the large-cohorts issue and goes in
/// <see cref="PutMembersAsync"/> where the 501 is answered now.
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
            .Produces<PartnerMessage>(StatusCodes.Status400BadRequest)
            .Produces<PartnerMessage>(StatusCodes.Status401Unauthorized)
            .Produces<PartnerMessage>(StatusCodes.Status415UnsupportedMediaType)
            .Produces<PartnerMessage>(StatusCodes.Status501NotImplemented);
        return partnerGroup;
    }

    private static async Task<IResult> PutMembersAsync(string partner, HttpContext http, [FromServices] PartnerRequestHandler handler)
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

        var cohortId = PartnerEndpoints.RawPathSegment(http, 3);
        if (cohortId is not { Length: > 0 and <= PartnerRequestParser.MaxCohortIdLength })
        {
            return handler.Reject(StatusCodes.Status400BadRequest, PartnerMessages.CohortIdInvalid);
        }

        // The snapshot pipeline is the large-cohorts issue: nothing is read or published yet.
        return handler.Reject(StatusCodes.Status501NotImplemented, PartnerMessages.SnapshotNotAvailable);
    }
}
