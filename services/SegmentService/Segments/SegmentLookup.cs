using System.Collections.Concurrent;
using CohortBridge.SegmentService.Data;
using CohortBridge.SegmentService.Projections;
using Microsoft.Extensions.Options;

namespace CohortBridge.SegmentService.Segments;

/// <summary>
/// Segment definitions for the read paths (size, check, members), kept for <c>Segments:SegmentCacheSeconds</c> so that
/// a membership check is answered from memory rather than a database round trip. Writes through this replica
/// invalidate at once; a change made through another replica is seen within the cache time (0 disables the cache).
/// </summary>
public sealed class SegmentLookup(SegmentRepository segments, TimeProvider time, IOptions<SegmentsOptions> options)
{
    private readonly ConcurrentDictionary<(string Workspace, Guid Id), (Segment Segment, DateTimeOffset Expires)> _cache = new();

    public async Task<Segment?> GetAsync(string workspaceId, Guid segmentId, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        if (_cache.TryGetValue((workspaceId, segmentId), out var cached) && cached.Expires > now)
        {
            return cached.Segment;
        }

        var segment = await segments.GetAsync(workspaceId, segmentId, ct);
        var ttl = options.Value.SegmentCacheSeconds;
        if (segment is null || ttl <= 0)
        {
            _cache.TryRemove((workspaceId, segmentId), out _);
        }
        else
        {
            _cache[(workspaceId, segmentId)] = (segment, now.AddSeconds(ttl));
        }

        return segment;
    }

    public void Invalidate(string workspaceId, Guid segmentId) => _cache.TryRemove((workspaceId, segmentId), out _);
}
