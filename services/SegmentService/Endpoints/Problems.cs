using System.Text.Json;
using System.Text.RegularExpressions;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.SegmentService.Endpoints;

/// <summary>RFC 9457 problem details for SegmentService's APIs.</summary>
internal static partial class Problems
{
    public static ProblemHttpResult BadRequest(string title, string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: title, detail: detail);

    public static ProblemHttpResult SegmentNotFound(string workspaceId, string segmentId) =>
        TypedResults.Problem(
            statusCode: StatusCodes.Status404NotFound,
            title: "Segment not found",
            detail: $"Workspace '{workspaceId}' has no segment '{segmentId}'.");

    public static ProblemHttpResult? InvalidWorkspace(string workspaceId) =>
        WorkspaceIdPattern().IsMatch(workspaceId)
            ? null
            : BadRequest("Invalid workspace_id", "workspace_id must match [a-z0-9][a-z0-9-]{0,62}.");

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    private static partial Regex WorkspaceIdPattern();
}

/// <summary>Reads a JSON object body with clear 4xx answers for every way it can be wrong.</summary>
internal static class RequestJson
{
    public const int MaxBodyBytes = 1024 * 1024;

    public static async Task<(JsonDocument? Body, ProblemHttpResult? Problem)> ReadObjectAsync(HttpRequest request, CancellationToken ct)
    {
        if (!request.HasJsonContentType())
        {
            return (null, TypedResults.Problem(
                statusCode: StatusCodes.Status415UnsupportedMediaType,
                title: "Unsupported media type",
                detail: "content type must be application/json"));
        }

        if (request.ContentLength > MaxBodyBytes)
        {
            return (null, TypedResults.Problem(
                statusCode: StatusCodes.Status413PayloadTooLarge,
                title: "Body too large",
                detail: $"request body is larger than {MaxBodyBytes} bytes"));
        }

        JsonDocument body;
        try
        {
            // Deep enough for FilterParser to answer a too-deep filter with its own message (it stops at MaxDepth levels);
            // parsing is not recursive, and the body is at most MaxBodyBytes.
            body = await JsonDocument.ParseAsync(request.Body, new JsonDocumentOptions { MaxDepth = 1024 }, ct);
        }
        catch (JsonException)
        {
            return (null, Problems.BadRequest("Invalid body", "request body must be a JSON object"));
        }

        if (body.RootElement.ValueKind != JsonValueKind.Object)
        {
            body.Dispose();
            return (null, Problems.BadRequest("Invalid body", "request body must be a JSON object"));
        }

        if (!JsonText.HoldsValidText(body.RootElement))
        {
            body.Dispose();
            return (null, Problems.BadRequest("Invalid body", "request body must be a JSON object whose strings are valid Unicode (no invalid UTF-8, no lone surrogate escapes)"));
        }

        return (body, null);
    }
}
