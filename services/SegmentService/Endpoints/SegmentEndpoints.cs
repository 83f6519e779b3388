using System.Text;
using System.Text.Json;
using CohortBridge.SegmentService.Data;
using CohortBridge.SegmentService.Filters;
using CohortBridge.SegmentService.Segments;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.SegmentService.Endpoints;

/// <summary>A segment as returned; times are UTC <see cref="DateTime"/>s so that they serialize with a 'Z'.</summary>
public sealed record SegmentResponse(
    Guid SegmentId, string WorkspaceId, string Name, JsonElement Filter, DateTime CreatedAt, DateTime UpdatedAt);

public sealed record SegmentListResponse(IReadOnlyList<SegmentResponse> Items, string? NextCursor);

/// <summary>Segment definitions: <c>/admin/workspaces/{workspace_id}/segments</c> (admin token).</summary>
public static class SegmentEndpoints
{
    private const int DefaultLimit = 50;
    private const int MaxLimit = 500;
    private const int MaxNameLength = 200;

    public static IEndpointRouteBuilder MapSegmentEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/workspaces/{workspaceId}/segments").RequireAdminToken();
        group.MapPost("", CreateAsync);
        group.MapGet("", ListAsync);
        group.MapGet("/{segmentId}", GetAsync);
        group.MapPut("/{segmentId}", UpdateAsync);
        group.MapDelete("/{segmentId}", DeleteAsync);
        return app;
    }

    private static async Task<Results<Created<SegmentResponse>, ProblemHttpResult>> CreateAsync(
        string workspaceId, HttpRequest request, AudienceQueries audiences, SegmentRepository segments, TimeProvider time,
        CancellationToken ct)
    {
        if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
        {
            return invalid;
        }

        var (name, filter, problem) = await ReadDefinitionAsync(request, workspaceId, audiences, ct);
        if (problem is not null)
        {
            return problem;
        }

        var now = time.GetUtcNow().UtcDateTime;
        var segment = new Segment(Guid.CreateVersion7(), workspaceId, name!, filter!.ToJson(), now, now);
        await segments.InsertAsync(segment, ct);
        return TypedResults.Created($"/admin/workspaces/{workspaceId}/segments/{segment.SegmentId}", ToResponse(segment));
    }

    private static async Task<Results<Ok<SegmentListResponse>, ProblemHttpResult>> ListAsync(
        string workspaceId, SegmentRepository segments, string? limit, string? cursor, CancellationToken ct)
    {
        if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
        {
            return invalid;
        }

        if (!PageLimit.TryParse(limit, MaxLimit, DefaultLimit, out var pageSize))
        {
            return Problems.BadRequest("Invalid limit", PageLimit.Invalid(MaxLimit));
        }

        Guid? after = null;
        if (!string.IsNullOrEmpty(cursor))
        {
            if (!TryDecodeCursor(cursor, out var decoded))
            {
                return Problems.BadRequest("Invalid cursor", "cursor is not a value returned as next_cursor.");
            }

            after = decoded;
        }

        var page = await segments.ListAsync(workspaceId, after, pageSize + 1, ct);
        var items = page.Take(pageSize).Select(ToResponse).ToList();
        var next = page.Count > pageSize ? EncodeCursor(items[^1].SegmentId) : null;
        return TypedResults.Ok(new SegmentListResponse(items, next));
    }

    private static async Task<Results<Ok<SegmentResponse>, ProblemHttpResult>> GetAsync(
        string workspaceId, string segmentId, SegmentRepository segments, CancellationToken ct)
    {
        if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
        {
            return invalid;
        }

        var segment = Guid.TryParse(segmentId, out var id) ? await segments.GetAsync(workspaceId, id, ct) : null;
        return segment is null ? Problems.SegmentNotFound(workspaceId, segmentId) : TypedResults.Ok(ToResponse(segment));
    }

    private static async Task<Results<Ok<SegmentResponse>, ProblemHttpResult>> UpdateAsync(
        string workspaceId, string segmentId, HttpRequest request, AudienceQueries audiences, SegmentRepository segments,
        SegmentLookup lookup, TimeProvider time, CancellationToken ct)
    {
        if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
        {
            return invalid;
        }

        if (!Guid.TryParse(segmentId, out var id))
        {
            return Problems.SegmentNotFound(workspaceId, segmentId);
        }

        var (name, filter, problem) = await ReadDefinitionAsync(request, workspaceId, audiences, ct);
        if (problem is not null)
        {
            return problem;
        }

        var updated = await segments.UpdateAsync(workspaceId, id, name!, filter!.ToJson(), time.GetUtcNow().UtcDateTime, ct);
        lookup.Invalidate(workspaceId, id);
        return updated is null ? Problems.SegmentNotFound(workspaceId, segmentId) : TypedResults.Ok(ToResponse(updated));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(
        string workspaceId, string segmentId, SegmentRepository segments, SegmentLookup lookup, CancellationToken ct)
    {
        if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
        {
            return invalid;
        }

        var deleted = Guid.TryParse(segmentId, out var id) && await segments.DeleteAsync(workspaceId, id, ct);
        lookup.Invalidate(workspaceId, id);
        return deleted ? TypedResults.NoContent() : Problems.SegmentNotFound(workspaceId, segmentId);
    }

    /// <summary>Reads and validates <c>{"name", "filter"}</c>; the filter's cohorts must exist in the workspace.</summary>
    private static async Task<(string? Name, Filter? Filter, ProblemHttpResult? Problem)> ReadDefinitionAsync(
        HttpRequest request, string workspaceId, AudienceQueries audiences, CancellationToken ct)
    {
        var (body, problem) = await RequestJson.ReadObjectAsync(request, ct);
        if (problem is not null)
        {
            return (null, null, problem);
        }

        using (body)
        {
            var root = body!.RootElement;
            var name = root.TryGetProperty("name", out var nameElement) && nameElement.ValueKind == JsonValueKind.String
                ? nameElement.GetString()
                : null;
            if (string.IsNullOrWhiteSpace(name) || name.Length > MaxNameLength || !PostgresText.CanStore(name))
            {
                return (null, null, Problems.BadRequest("Invalid segment", $"name must be a non-empty string of at most {MaxNameLength} characters, without U+0000."));
            }

            if (!root.TryGetProperty("filter", out var filterElement))
            {
                return (null, null, Problems.BadRequest("Invalid filter", "filter is required."));
            }

            var (filter, filterProblem) = audiences.ParseAndValidate(workspaceId, filterElement);
            return (name, filter, filterProblem);
        }
    }

    private static SegmentResponse ToResponse(Segment s)
    {
        using var doc = JsonDocument.Parse(s.Filter);
        return new SegmentResponse(
            s.SegmentId, s.WorkspaceId, s.Name, doc.RootElement.Clone(),
            DateTime.SpecifyKind(s.CreatedAt, DateTimeKind.Utc),
            DateTime.SpecifyKind(s.UpdatedAt, DateTimeKind.Utc));
    }

    private static string EncodeCursor(Guid after) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes(after.ToString("N"))).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static bool TryDecodeCursor(string cursor, out Guid after)
    {
        after = Guid.Empty;
        try
        {
            var padded = cursor.Replace('-', '+').Replace('_', '/');
            padded += new string('=', (4 - padded.Length % 4) % 4);
            return Guid.TryParseExact(Encoding.UTF8.GetString(Convert.FromBase64String(padded)), "N", out after);
        }
        catch (FormatException)
        {
            return false;
        }
    }
}
