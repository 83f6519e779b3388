using CohortBridge.Contracts;
using CohortBridge.SegmentService.Bitmaps;

namespace CohortBridge.SegmentService.Projections;

/// <summary>How a member is named in streams and samples: external_id, else first alias, else first device_id.</summary>
public readonly record struct MemberIdentity(string? ExternalId, UserAlias? Alias, string? DeviceId);

/// <summary>
/// A workspace's user directory as SegmentService needs it: identifier → ordinal with the matching rules of API.md
/// (external_id and aliases for identified users; device_ids and aliases for anonymous users only), ordinal → the
/// identifier to print, and the set of live users. Lookups take a read lock; a batch of changes takes the write lock
/// once and publishes a new live-users bitmap (readers holding the old one keep a consistent set).
/// </summary>
public sealed class UserDirectory
{
    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    private readonly Dictionary<string, int> _byExternalId = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Name, string Label), int> _byAlias = [];
    private readonly Dictionary<string, int> _byDeviceId = new(StringComparer.Ordinal);
    private readonly Dictionary<int, DirectoryUser> _users = [];
    private volatile RoaringBitmap _live = new();

    public RoaringBitmap LiveUsers => _live;

    public int UserCount
    {
        get
        {
            _lock.EnterReadLock();
            try
            {
                return _users.Count;
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
                identities[i] = _users.TryGetValue(ordinals[i], out var user) ? IdentityOf(user) : null;
            }
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>Applies users' full current identities (creations, identifications, changes, deletions).</summary>
    public void Apply(IEnumerable<DirectoryUser> users)
    {
        _lock.EnterWriteLock();
        try
        {
            var live = _live.Clone();
            foreach (var user in users)
            {
                if (user.Ordinal < 0)
                {
                    continue;
                }

                if (_users.Remove(user.Ordinal, out var previous))
                {
                    Unindex(previous);
                }

                if (user.Deleted)
                {
                    live.Remove(user.Ordinal);
                    continue;
                }

                _users[user.Ordinal] = user;
                Index(user);
                live.Add(user.Ordinal);
            }

            _live = live;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    private static bool IsIdentified(DirectoryUser user) => user.Identified || user.ExternalId is not null;

    private static MemberIdentity IdentityOf(DirectoryUser user)
    {
        if (user.ExternalId is not null)
        {
            return new MemberIdentity(user.ExternalId, null, null);
        }

        if (user.Aliases.Count > 0)
        {
            return new MemberIdentity(null, user.Aliases[0], null);
        }

        return new MemberIdentity(null, null, user.DeviceIds.Count > 0 ? user.DeviceIds[0] : null);
    }

    private void Index(DirectoryUser user)
    {
        if (user.ExternalId is not null)
        {
            _byExternalId[user.ExternalId] = user.Ordinal;
        }

        foreach (var alias in user.Aliases)
        {
            _byAlias[(alias.AliasName, alias.AliasLabel)] = user.Ordinal;
        }

        // API.md rule 3: a device_id never matches an identified user.
        if (!IsIdentified(user))
        {
            foreach (var device in user.DeviceIds)
            {
                _byDeviceId[device] = user.Ordinal;
            }
        }
    }

    private void Unindex(DirectoryUser user)
    {
        if (user.ExternalId is not null)
        {
            RemoveIfOwned(_byExternalId, user.ExternalId, user.Ordinal);
        }

        foreach (var alias in user.Aliases)
        {
            RemoveIfOwned(_byAlias, (alias.AliasName, alias.AliasLabel), user.Ordinal);
        }

        foreach (var device in user.DeviceIds)
        {
            RemoveIfOwned(_byDeviceId, device, user.Ordinal);
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
