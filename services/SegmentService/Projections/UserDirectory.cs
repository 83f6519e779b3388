using CohortBridge.Contracts;
using CohortBridge.SegmentService.Bitmaps;

namespace CohortBridge.SegmentService.Projections;

/// <summary>How a member is named in streams and samples: external_id, else first alias, else first device_id.</summary>
public readonly record struct MemberIdentity(string? ExternalId, UserAlias? Alias, string? DeviceId);

/// <summary>
/// A user's identity and the directory version it is at least as recent as
/// (<see cref="UserDirectoryChanged.DirectoryVersion"/>; 0 = unknown).
/// </summary>
public readonly record struct VersionedUser(DirectoryUser User, long Version);

/// <summary>
/// A workspace's user directory as SegmentService needs it: identifier → ordinal with the matching rules of API.md
/// (external_id and aliases for identified users; device_ids and aliases for anonymous users only), ordinal → the
/// identifier to print, and the set of live users. Lookups take a read lock; a batch of changes takes the write lock
/// once and publishes a new live-users bitmap (readers holding the old one keep a consistent set).
/// Users are kept as structs in pages indexed by ordinal (ordinals are dense per workspace), not as the
/// <see cref="DirectoryUser"/> messages they arrive in: per-user objects and their lists, with a dictionary by ordinal,
/// made the directory most of SegmentService's 3.5 GB heap at 10M users.
/// </summary>
public sealed class UserDirectory
{
    private const int PageBits = 16;
    private const int PageSize = 1 << PageBits;

    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    private readonly Dictionary<string, int> _byExternalId = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Name, string Label), int> _byAlias = [];
    private readonly Dictionary<string, int> _byDeviceId = new(StringComparer.Ordinal);
    private Entry[]?[] _pages = [];
    private int _count;
    private volatile RoaringBitmap _live = new();

    /// <summary>
    /// A live user's identifiers; arrays only where the user has any (most have none). A deleted user is kept as a
    /// tombstone, so that an entry arriving late cannot bring it back.
    /// </summary>
    private struct Entry
    {
        public long Version;
        public bool Deleted;
        public bool Present;
        public bool Identified;
        public string? ExternalId;
        public UserAlias[]? Aliases;
        public string[]? DeviceIds;
    }

    public RoaringBitmap LiveUsers => _live;

    public int UserCount
    {
        get
        {
            _lock.EnterReadLock();
            try
            {
                return _count;
            }
            finally
            {
                _lock.ExitReadLock();
            }
        }
    }

    public int? FindByExternalId(string externalId) => Find(_byExternalId, externalId);

    public int? FindByDeviceId(string deviceId) => Find(_byDeviceId, deviceId);

    public int? FindByAlias(string aliasName, string aliasLabel) => Find(_byAlias, (aliasName, aliasLabel));

    /// <summary>Fills <paramref name="identities"/> for the given ordinals under one read lock (null when unknown).</summary>
    public void Identify(ReadOnlySpan<int> ordinals, Span<MemberIdentity?> identities)
    {
        _lock.EnterReadLock();
        try
        {
            for (var i = 0; i < ordinals.Length; i++)
            {
                identities[i] = Page(ordinals[i]) is { } page && page[ordinals[i] & (PageSize - 1)] is { Present: true } user
                    ? IdentityOf(user)
                    : null;
            }
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>Applies users' full identities as read at one directory version (0 = unknown).</summary>
    public int Apply(IEnumerable<DirectoryUser> users, long version) => Apply(users.Select(u => new VersionedUser(u, version)));

    /// <summary>
    /// Applies users' full identities (creations, identifications, changes, deletions). An entry older than the one
    /// held (a lower version; 0 counts as current) is skipped, and so is every entry for a deleted user: CohortService
    /// never brings a deleted user back (an identifier used again names a new ordinal), so a deletion is final whatever
    /// the versions, including those of events from before versions. Returns how many were skipped.
    /// </summary>
    public int Apply(IEnumerable<VersionedUser> users)
    {
        var stale = 0;
        _lock.EnterWriteLock();
        try
        {
            var live = _live.Clone();
            foreach (var (user, version) in users)
            {
                if (user.Ordinal < 0)
                {
                    continue;
                }

                ref var entry = ref Slot(user.Ordinal);
                if (entry.Deleted || (version != 0 && version < entry.Version))
                {
                    // The deletion again (a duplicate) is no news.
                    stale += entry.Deleted && user.Deleted ? 0 : 1;
                    continue;
                }

                var kept = Math.Max(version, entry.Version);
                if (entry.Present)
                {
                    Unindex(entry, user.Ordinal);
                    _count--;
                }

                entry = new Entry { Version = kept, Deleted = user.Deleted };
                if (user.Deleted)
                {
                    live.Remove(user.Ordinal);
                    continue;
                }

                entry = new Entry
                {
                    Version = kept,
                    Present = true,
                    Identified = user.Identified || user.ExternalId is not null,
                    ExternalId = user.ExternalId,
                    Aliases = user.Aliases.Count > 0 ? [.. user.Aliases] : null,
                    DeviceIds = user.DeviceIds.Count > 0 ? [.. user.DeviceIds] : null,
                };
                _count++;
                Index(entry, user.Ordinal);
                live.Add(user.Ordinal);
            }

            _live = live;
        }
        finally
        {
            _lock.ExitWriteLock();
        }

        return stale;
    }

    private static MemberIdentity IdentityOf(in Entry user) =>
        user.ExternalId is not null ? new MemberIdentity(user.ExternalId, null, null)
        : user.Aliases is { } aliases ? new MemberIdentity(null, aliases[0], null)
        : new MemberIdentity(null, null, user.DeviceIds?[0]);

    /// <summary>The page holding <paramref name="ordinal"/>, or null when none was written (read path).</summary>
    private Entry[]? Page(int ordinal) =>
        (ordinal >> PageBits) is var p && (uint)p < (uint)_pages.Length ? _pages[p] : null;

    /// <summary>The entry of <paramref name="ordinal"/>, its page allocated when missing (write path, write lock held).</summary>
    private ref Entry Slot(int ordinal)
    {
        var p = ordinal >> PageBits;
        if (p >= _pages.Length)
        {
            Array.Resize(ref _pages, Math.Max(p + 1, _pages.Length * 2));
        }

        return ref (_pages[p] ??= new Entry[PageSize])[ordinal & (PageSize - 1)];
    }

    private void Index(in Entry user, int ordinal)
    {
        if (user.ExternalId is not null)
        {
            _byExternalId[user.ExternalId] = ordinal;
        }

        foreach (var alias in user.Aliases ?? [])
        {
            _byAlias[(alias.AliasName, alias.AliasLabel)] = ordinal;
        }

        // API.md rule 3: a device_id never matches an identified user.
        if (!user.Identified)
        {
            foreach (var device in user.DeviceIds ?? [])
            {
                _byDeviceId[device] = ordinal;
            }
        }
    }

    private void Unindex(in Entry user, int ordinal)
    {
        if (user.ExternalId is not null)
        {
            RemoveIfOwned(_byExternalId, user.ExternalId, ordinal);
        }

        foreach (var alias in user.Aliases ?? [])
        {
            RemoveIfOwned(_byAlias, (alias.AliasName, alias.AliasLabel), ordinal);
        }

        foreach (var device in user.DeviceIds ?? [])
        {
            RemoveIfOwned(_byDeviceId, device, ordinal);
        }
    }

    private static void RemoveIfOwned<TKey>(Dictionary<TKey, int> map, TKey key, int ordinal) where TKey : notnull
    {
        if (map.TryGetValue(key, out var owner) && owner == ordinal)
        {
            map.Remove(key);
        }
    }

    private int? Find<TKey>(Dictionary<TKey, int> map, TKey key) where TKey : notnull
    {
        _lock.EnterReadLock();
        try
        {
            return map.TryGetValue(key, out var ordinal) ? ordinal : null;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }
}
