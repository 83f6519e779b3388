using CohortBridge.Contracts;
using CohortBridge.SegmentService.Data;
using CohortBridge.SegmentService.Filters;

namespace CohortBridge.SegmentService.Projections;

/// <summary>
/// Applies cohort and directory changes to this replica's projection and its persisted copy. Version v of a cohort
/// applies only on v-1: an older or equal version is a duplicate and is dropped; a gap, or an event too large to
/// carry its users, makes it read the missing changes (or the whole cohort) from CohortService.
/// Writers of one workspace are serialised; readers never wait (each cohort is swapped in whole).
/// </summary>
public sealed partial class ProjectionUpdater(
    ProjectionStore store,
    ProjectionRepository repository,
    CohortServiceClient cohortService,
    SegmentMetrics metrics,
    TimeProvider time,
    ILogger<ProjectionUpdater> logger)
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _workspacesFromEvents = new(StringComparer.Ordinal);
    private volatile bool _directoriesComplete;

    public async Task ApplyAsync(CohortUpdated message, CancellationToken ct)
    {
        var workspace = store.GetOrAdd(message.WorkspaceId);
        var key = new CohortKey(message.Partner, message.CohortId);
        workspace.NoteSeen(key, message.Version);
        await workspace.WriteLock.WaitAsync(ct);
        try
        {
            var current = workspace.Cohort(key);
            var local = current?.Version ?? 0;
            if (message.Version <= local)
            {
                LogDuplicate(message.WorkspaceId, message.Partner, message.CohortId, message.Version, local);
                return;
            }

            CohortProjection? next;
            if (message.Version == local + 1 && CarriesItsUsers(message))
            {
                var members = current?.Members.Clone() ?? new Bitmaps.RoaringBitmap();
                foreach (var removed in message.Removed ?? [])
                {
                    members.Remove(removed.Ordinal);
                }

                foreach (var added in message.Added ?? [])
                {
                    members.Add(added.Ordinal);
                }

                next = new CohortProjection(key, message.Version, message.CohortName, message.Archived, members, time.GetUtcNow());
            }
            else
            {
                LogFetching(message.WorkspaceId, message.Partner, message.CohortId, message.Version, local, message.MustReread);
                next = await FetchAsync(message.WorkspaceId, key, current, message.CohortName, message.Version, ct);
                if (next is null)
                {
                    throw new InvalidOperationException(
                        $"Cohort {message.WorkspaceId}/{key} version {message.Version} could not be read from CohortService.");
                }
            }

            await PublishAsync(workspace, next, ct);
            metrics.RecordEventLag(message.WorkspaceId, key, time.GetUtcNow() - message.OccurredAt);
        }
        finally
        {
            workspace.WriteLock.Release();
        }
    }

    /// <summary>Brings one cohort up to CohortService's current version when it is behind.</summary>
    public async Task CatchUpAsync(CohortSummary summary, CancellationToken ct)
    {
        var workspace = store.GetOrAdd(summary.WorkspaceId);
        var key = new CohortKey(summary.Partner, summary.CohortId);
        workspace.NoteSeen(key, summary.Version);
        await workspace.WriteLock.WaitAsync(ct);
        try
        {
            var current = workspace.Cohort(key);
            if (current is not null && current.Version >= summary.Version)
            {
                return;
            }

            var next = await FetchAsync(summary.WorkspaceId, key, current, summary.Name, summary.Version, ct);
            if (next is not null)
            {
                await PublishAsync(workspace, next, ct);
            }
        }
        finally
        {
            workspace.WriteLock.Release();
        }
    }

    /// <summary>Applies users' identities: persisted first, then published to readers.</summary>
    public async Task ApplyAsync(UserDirectoryChanged message, CancellationToken ct)
    {
        if (message.Users.Count == 0)
        {
            return;
        }

        // Before the catch-up has covered every workspace, note this one so that its end can mark it (see
        // DirectoriesCompleteAsync); the flag is read again after the note, so a workspace is never left unmarked
        // by an end that ran in between.
        if (!_directoriesComplete)
        {
            _workspacesFromEvents.TryAdd(message.WorkspaceId, 0);
        }

        var workspace = store.GetOrAdd(message.WorkspaceId);
        await workspace.DirectoryLock.WaitAsync(ct);
        try
        {
            var users = message.Users.Select(u => new VersionedUser(u, message.DirectoryVersion)).ToList();
            await repository.SaveDirectoryUsersAsync(message.WorkspaceId, users, markLoaded: _directoriesComplete, ct);
            if (workspace.Directory.Apply(users) is > 0 and var stale)
            {
                LogStaleEntries(message.WorkspaceId, stale, message.DirectoryVersion);
            }
        }
        finally
        {
            workspace.DirectoryLock.Release();
        }
    }

    /// <summary>
    /// Called when a catch-up that listed CohortService's workspaces after this replica's queues were bound has read
    /// every listed directory it did not hold. A workspace missing from that list was created later, so every change
    /// of its directory is in this replica's durable queue: the replica holds it whole from its events and marks it
    /// loaded, so a restart does not read it again (at 10M users that read took minutes and was repeated on every
    /// restart, because a workspace created while the replica ran was never marked).
    /// </summary>
    public async Task DirectoriesCompleteAsync(CancellationToken ct)
    {
        _directoriesComplete = true;
        var seen = _workspacesFromEvents.Keys.ToList();
        if (seen.Count > 0)
        {
            await repository.MarkDirectoriesLoadedAsync(seen, ct);
        }

        _workspacesFromEvents.Clear();
    }

    /// <summary>
    /// Reads a workspace's whole directory from CohortService (first start of a replica). Its directory events wait
    /// meanwhile (they hold the queue, whose consumer runs one at a time): CohortService reads the directory in one
    /// snapshot taken when the read starts, and every change after it comes as an event, carrying the user's whole
    /// identity, after the read. (Directory versions would order them anyway; the wait keeps that true for events
    /// from a CohortService that sends none.)
    /// </summary>
    public async Task LoadDirectoryAsync(string workspaceId, CancellationToken ct)
    {
        const int batchSize = 50_000;
        var workspace = store.GetOrAdd(workspaceId);
        await workspace.DirectoryLock.WaitAsync(ct);
        try
        {
            var batch = new List<VersionedUser>(batchSize);
            var total = 0;
            await foreach (var user in cohortService.GetDirectoryAsync(workspaceId, ct))
            {
                batch.Add(user);
                if (batch.Count == batchSize)
                {
                    await repository.SaveDirectoryUsersAsync(workspaceId, batch, markLoaded: false, ct);
                    workspace.Directory.Apply(batch);
                    total += batch.Count;
                    batch = new List<VersionedUser>(batchSize);
                }
            }

            await repository.SaveDirectoryUsersAsync(workspaceId, batch, markLoaded: true, ct);
            workspace.Directory.Apply(batch);
            LogDirectoryLoaded(workspaceId, total + batch.Count);
        }
        finally
        {
            workspace.DirectoryLock.Release();
        }
    }

    private static bool CarriesItsUsers(CohortUpdated message) =>
        !message.MustReread
        && (message.Added?.Count ?? 0) == message.AddedCount
        && (message.Removed?.Count ?? 0) == message.RemovedCount;

    private async Task PublishAsync(WorkspaceProjection workspace, CohortProjection next, CancellationToken ct)
    {
        await repository.SaveCohortAsync(workspace.WorkspaceId, next, ct);
        workspace.Publish(next);
        LogApplied(workspace.WorkspaceId, next.Key.Partner, next.Key.CohortId, next.Version, next.Members.Cardinality);
    }

    /// <summary>
    /// The cohort as CohortService has it now: the change log after our version when it reaches back that far,
    /// else the whole member list. Null when CohortService does not know the cohort.
    /// </summary>
    private async Task<CohortProjection?> FetchAsync(
        string workspaceId, CohortKey key, CohortProjection? current, string hintName, long hintVersion, CancellationToken ct)
    {
        if (current is not null)
        {
            var changes = await cohortService.GetChangesAsync(workspaceId, key, current.Version, ct);
            if (changes is { Complete: true } && ApplyChanges(current, changes) is { } applied)
            {
                return applied;
            }
        }

        var full = await cohortService.GetMembersAsync(workspaceId, key, ct);
        if (full is null)
        {
            LogUnknownCohort(workspaceId, key.Partner, key.CohortId);
            return null;
        }

        if (current is not null && full.Version <= current.Version)
        {
            return current;
        }

        var name = full.Version == hintVersion ? hintName : await NameAtAsync(workspaceId, key, full.Version, ct) ?? hintName;
        return new CohortProjection(key, full.Version, name, full.Archived, full.Members, time.GetUtcNow());
    }

    private CohortProjection? ApplyChanges(CohortProjection current, CohortChanges changes)
    {
        var members = current.Members.Clone();
        var (version, name, archived) = (current.Version, current.Name, current.Archived);
        foreach (var item in changes.Items.OrderBy(i => i.Version))
        {
            if (item.Version <= version)
            {
                continue;
            }

            if (item.Version != version + 1)
            {
                return null;
            }

            members.RemoveMany(item.Removed.ToArray());
            foreach (var added in item.Added)
            {
                members.Add(added);
            }

            (version, name, archived) = (item.Version, item.Name, item.Archived);
        }

        return version < changes.CurrentVersion
            ? null
            : new CohortProjection(current.Key, version, name, archived, members, time.GetUtcNow());
    }

    private async Task<string?> NameAtAsync(string workspaceId, CohortKey key, long version, CancellationToken ct)
    {
        var changes = await cohortService.GetChangesAsync(workspaceId, key, version - 1, ct);
        return changes?.Items.FirstOrDefault(i => i.Version == version)?.Name;
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Debug,
        Message = "Dropped CohortUpdated {WorkspaceId}/{Partner}/{CohortId} version {Version}: already at {LocalVersion}")]
    private partial void LogDuplicate(string workspaceId, string partner, string cohortId, long version, long localVersion);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information,
        Message = "Reading {WorkspaceId}/{Partner}/{CohortId} from CohortService: event version {Version}, local {LocalVersion}, must reread {MustReread}")]
    private partial void LogFetching(string workspaceId, string partner, string cohortId, long version, long localVersion, bool mustReread);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug,
        Message = "Applied {WorkspaceId}/{Partner}/{CohortId} version {Version}: {MemberCount} members")]
    private partial void LogApplied(string workspaceId, string partner, string cohortId, long version, long memberCount);

    [LoggerMessage(EventId = 103, Level = LogLevel.Warning,
        Message = "CohortService does not know cohort {WorkspaceId}/{Partner}/{CohortId}")]
    private partial void LogUnknownCohort(string workspaceId, string partner, string cohortId);

    [LoggerMessage(EventId = 104, Level = LogLevel.Information,
        Message = "Loaded the directory of {WorkspaceId} from CohortService: {UserCount} users")]
    private partial void LogDirectoryLoaded(string workspaceId, int userCount);

    [LoggerMessage(EventId = 105, Level = LogLevel.Information,
        Message = "Skipped {Count} directory entries of {WorkspaceId} at version {Version}: newer identities or deletions are held (a late or replayed event)")]
    private partial void LogStaleEntries(string workspaceId, int count, long version);
}
