using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.Features;

namespace CohortBridge.CohortService.Endpoints;

/// <summary>
/// Path values exactly as the client encoded them. Routing leaves "%2F" undecoded inside a segment (so cohort ids
/// with '/' still route), but decodes "%25": reading the raw target and unescaping each segment once is the only
/// unambiguous way to get cohort ids, partners and external ids that contain '/', '%' or spaces.
/// </summary>
public static partial class RawPath
{
    public static string Segment(HttpContext context, int index)
    {
        var target = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "";
        var query = target.IndexOf('?', StringComparison.Ordinal);
        if (query >= 0)
        {
            target = target[..query];
        }

        var segments = target.Split('/', StringSplitOptions.RemoveEmptyEntries);
        return Uri.UnescapeDataString(segments[index]);
    }

    public static bool IsWorkspaceId(string value) => WorkspacePattern().IsMatch(value);

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    private static partial Regex WorkspacePattern();

    public static IResult BadRequest(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Bad request", detail: detail);

    public static IResult NotFound(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not found", detail: detail);
}
