using System.Collections.Concurrent;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Filters;

namespace CohortBridge.SegmentService.Projections;

/// <summary>
/// One cohort as projected: an immutable snapshot. A change builds a new snapshot (copy-on-write of the bitmap) and
/// swaps it in, so a reader always sees one whole version.
/// </summary>
public sealed record CohortProjection(
    CohortKey Key, long Version, string Name, bool Archived, RoaringBitmap Members, DateTimeOffset UpdatedAt);

/// <summary>Everything SegmentService knows about one workspace: its cohorts and its user directory.</summary>
public sealed class WorkspaceProjection(string workspaceId) : IAudienceSource
{
    private readonly ConcurrentDictionary<CohortKey, CohortProjection> _cohorts = new();
    private readonly ConcurrentDictionary<CohortKey, long> _latestSeen = new();

    public string WorkspaceId { get; } = workspaceId;

    public UserDirectory Directory { get; } = new();

    /// <summary>Serialises writers of this workspace's cohorts (readers never wait on it).</summary>
    public SemaphoreSlim WriteLock { get; } = new(1, 1);

    /// <summary>
    /// Serialises writers of this workspace's directory: a whole-directory read from CohortService holds it to the end,
    /// since it is a picture from before the events that arrive meanwhile, which must apply after it.
    /// </summary>
    public SemaphoreSlim DirectoryLock { get; } = new(1, 1);

    public RoaringBitmap LiveUsers => Directory.LiveUsers;

    public IEnumerable<CohortProjection> Cohorts => _cohorts.Values;

    public RoaringBitmap? CohortMembers(CohortKey cohort) =>
        _cohorts.TryGetValue(cohort, out var c) ? (c.Archived ? RoaringBitmap.Empty : c.Members) : null;

    public CohortProjection? Cohort(CohortKey cohort) => _cohorts.GetValueOrDefault(cohort);

    public void Publish(CohortProjection cohort)
    {
        _cohorts[cohort.Key] = cohort;
        NoteSeen(cohort.Key, cohort.Version);
    }

    /// <summary>Records that CohortService has reached at least this version (for the lag metric).</summary>
    public void NoteSeen(CohortKey cohort, long version) =>
        _latestSeen.AddOrUpdate(cohort, version, (_, seen) => Math.Max(seen, version));

    /// <summary>Versions known to exist in CohortService but not yet applied here, per cohort.</summary>
    public IEnumerable<(CohortKey Cohort, long Behind)> Lag()
    {
        foreach (var (key, seen) in _latestSeen)
        {
            var applied = _cohorts.TryGetValue(key, out var c) ? c.Version : 0;
            yield return (key, Math.Max(0, seen - applied));
        }
    }
}

/// <summary>All workspaces' projections held by this replica, and whether they are loaded and caught up.</summary>
public sealed class ProjectionStore
{
    private readonly ConcurrentDictionary<string, WorkspaceProjection> _workspaces = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private volatile bool _ready;

    /// <summary>True once persisted projections are loaded and the start-up catch-up has finished (or timed out).</summary>
    public bool IsReady => _ready;

    public bool IsLoaded => _loaded.Task.IsCompleted;

    public IEnumerable<WorkspaceProjection> Workspaces => _workspaces.Values;

    public WorkspaceProjection GetOrAdd(string workspaceId) =>
        _workspaces.GetOrAdd(workspaceId, id => new WorkspaceProjection(id));

    public WorkspaceProjection? Find(string workspaceId) => _workspaces.GetValueOrDefault(workspaceId);

    /// <summary>Consumers wait here so that no event is applied on top of a projection that is still loading.</summary>
    public Task WhenLoaded(CancellationToken cancellationToken) => _loaded.Task.WaitAsync(cancellationToken);

    public void MarkLoaded() => _loaded.TrySetResult();

    public void MarkReady() => _ready = true;
}
