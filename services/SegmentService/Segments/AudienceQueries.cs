using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Data;
using CohortBridge.SegmentService.Filters;
using CohortBridge.SegmentService.Projections;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.SegmentService.Segments;

/// <summary>Answers audience questions from this replica's projection, timing each evaluation.</summary>
public sealed class AudienceQueries(ProjectionStore store, SegmentMetrics metrics)
{
    private static readonly WorkspaceProjection EmptyWorkspace = new("");

    // Parsed filters of stored segments, keyed by id and last update (a changed segment gets a new entry).
    private readonly ConcurrentDictionary<(Guid, DateTime), Filter> _parsed = new();

    public IAudienceSource Source(string workspaceId) => store.Find(workspaceId) ?? EmptyWorkspace;

    public UserDirectory? Directory(string workspaceId) => store.Find(workspaceId)?.Directory;

    public IEnumerable<CohortProjection> Cohorts(string workspaceId) =>
        store.Find(workspaceId)?.Cohorts ?? [];

    /// <summary>Parses a filter and checks that every cohort it names exists in the workspace.</summary>
    public (Filter? Filter, ProblemHttpResult? Problem) ParseAndValidate(string workspaceId, JsonElement element)
    {
        Filter filter;
        try
        {
            filter = FilterParser.Parse(element);
        }
        catch (FilterFormatException ex)
        {
            return (null, TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Invalid filter", detail: ex.Message));
        }

        var source = Source(workspaceId);
        var unknown = filter.Cohorts().Distinct().Where(c => source.CohortMembers(c) is null).ToList();
        if (unknown.Count > 0)
        {
            var names = string.Join(", ", unknown.Select(c => $"partner '{c.Partner}' cohort_id '{c.CohortId}'"));
            return (null, TypedResults.Problem(
                statusCode: StatusCodes.Status400BadRequest,
                title: "Unknown cohort",
                detail: $"The filter names {(unknown.Count == 1 ? "a cohort" : "cohorts")} that workspace '{workspaceId}' does not have: {names}."));
        }

        return (filter, null);
    }

    public Filter FilterOf(Segment segment) =>
        _parsed.GetOrAdd((segment.SegmentId, segment.UpdatedAt), _ => FilterParser.Parse(segment.Filter));

    public RoaringBitmap Evaluate(string workspaceId, Filter filter, string operation)
    {
        var started = Stopwatch.GetTimestamp();
        var result = FilterEvaluator.Evaluate(filter, Source(workspaceId));
        metrics.RecordEvaluation(operation, Stopwatch.GetElapsedTime(started));
        return result;
    }

    /// <summary>The audience size, counted chunk by chunk without building the member set.</summary>
    public long Count(string workspaceId, Filter filter, string operation)
    {
        var started = Stopwatch.GetTimestamp();
        var size = ChunkEvaluator.Count(filter, Source(workspaceId));
        metrics.RecordEvaluation(operation, Stopwatch.GetElapsedTime(started));
        return size;
    }

    /// <summary>The first members (ascending ordinals), for samples.</summary>
    public int CopyFirst(string workspaceId, Filter filter, Span<int> destination) =>
        ChunkEvaluator.CopyFirst(filter, Source(workspaceId), destination);

    public bool Contains(string workspaceId, Filter filter, int ordinal)
    {
        var started = Stopwatch.GetTimestamp();
        var member = FilterEvaluator.Contains(filter, Source(workspaceId), ordinal);
        metrics.RecordEvaluation("check", Stopwatch.GetElapsedTime(started));
        return member;
    }
}
