using System.Text.Json;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.KeyService.Endpoints;

/// <summary>RFC 9457 problem details for the admin and internal APIs.</summary>
internal static class Problems
{
    public static ProblemHttpResult BadRequest(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Bad request", detail: detail);

    public static ProblemHttpResult NotFound(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not found", detail: detail);

    public static ProblemHttpResult Conflict(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Conflict", detail: detail);

    public static ProblemHttpResult Unavailable(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status503ServiceUnavailable, title: "Service unavailable", detail: detail);

    /// <summary>
    /// Reads a JSON object body inside the handler (not by parameter binding), so that the admin-token filter answers
    /// 401 before a malformed body could answer 400. Error texts never echo the body.
    /// </summary>
    public static async Task<(T? Value, ProblemHttpResult? Problem)> ReadBodyAsync<T>(HttpRequest request, CancellationToken ct)
        where T : class
    {
        if (!request.HasJsonContentType())
        {
            return (null, TypedResults.Problem(
                statusCode: StatusCodes.Status415UnsupportedMediaType, title: "Unsupported media type",
                detail: "Content type must be application/json."));
        }

        try
        {
            var value = await JsonSerializer.DeserializeAsync<T>(request.Body, PlatformJson.Options, ct);
            return value is null ? (null, BadRequest("The request body must be a JSON object.")) : (value, null);
        }
        catch (JsonException)
        {
            return (null, BadRequest("The request body must be a JSON object with the documented fields."));
        }
    }
}
