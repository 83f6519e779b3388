using CohortBridge.CohortService.Directory;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.Features;

namespace CohortBridge.CohortService.Endpoints;

/// <summary>Admin API of the user directory: NDJSON bulk upsert and deletion.</summary>
public static class DirectoryEndpoints
{
    public static IEndpointRouteBuilder MapDirectoryEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/workspaces/{workspace_id}").RequireAdminToken();
        // "users:bulk" is one literal segment: ':' only means something inside {...} in route templates.
        group.MapPost("/users:bulk", BulkUpsert);
        group.MapDelete("/users/{external_id}", DeleteUser);
        return app;
    }

    private static async Task<IResult> BulkUpsert(HttpContext context, UserDirectory directory, CancellationToken ct)
    {
        var ws = RawPath.Segment(context, 2);
        if (!RawPath.IsWorkspaceId(ws))
        {
            return RawPath.BadRequest("workspace_id must match [a-z0-9][a-z0-9-]{0,62}");
        }

        // A directory load is streamed and merged in chunks: no body size limit other than the client's patience.
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = null;
        }

        var errors = new List<LineError>();
        UpsertResult result;
        try
        {
            result = await directory.UpsertAsync(ws, NdjsonProfileReader.ReadAsync(context.Request.BodyReader, errors, ct), errors, ct);
        }
        catch (BadHttpRequestException ex)
        {
            return TypedResults.Problem(statusCode: ex.StatusCode, title: "Bad request", detail: ex.Message);
        }

        return TypedResults.Ok(new BulkUpsertResponse(
            result.Upserted, result.Identified, result.Rejected,
            [.. result.Errors.Select(e => new BulkUpsertError(e.Line, e.Error))]));
    }

    private static async Task<IResult> DeleteUser(HttpContext context, UserDirectory directory, CancellationToken ct)
    {
        var ws = RawPath.Segment(context, 2);
        var externalId = RawPath.Segment(context, 4);
        if (!RawPath.IsWorkspaceId(ws))
        {
            return RawPath.BadRequest("workspace_id must match [a-z0-9][a-z0-9-]{0,62}");
        }

        var deleted = await directory.DeleteAsync(ws, [externalId], ct);
        return deleted.Length == 0
            ? RawPath.NotFound("No live user has this external_id in this workspace.")
            : TypedResults.NoContent();
    }

    public sealed record BulkUpsertResponse(long Upserted, long Identified, long Rejected, List<BulkUpsertError> Errors);

    public sealed record BulkUpsertError(int Line, string Error);
}
