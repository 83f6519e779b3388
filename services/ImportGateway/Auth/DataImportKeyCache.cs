using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Options;

namespace CohortBridge.ImportGateway.Auth;

/// <summary>A cached validation; fresh until <see cref="FreshUntil"/>, afterwards only usable while KeyService is down.</summary>
public sealed record CachedValidation(PartnerAuthResult Result, DateTimeOffset FreshUntil);

/// <summary>
/// This replica's cache of key validations. Entries are keyed by a SHA-256 of (partner, partner API key, client
/// secret), so no credential is held as a cache key. An invalidated key id is remembered (a tombstone) for longer
/// than any entry can live: lookups of that key are refused at once, and a validation that was already in flight when
/// the invalidation arrived cannot put the key back.
/// </summary>
public sealed class DataImportKeyCache : IDisposable
{
    private static readonly TimeSpan TombstoneMargin = TimeSpan.FromSeconds(60);
    private readonly MemoryCache _entries;
    private readonly ConcurrentDictionary<Guid, DateTimeOffset> _tombstones = new();
    private readonly KeyCacheOptions _options;
    private readonly TimeProvider _time;

    public DataImportKeyCache(IOptions<KeyCacheOptions> options, TimeProvider time)
    {
        _options = options.Value;
        _time = time;
        _entries = new MemoryCache(new MemoryCacheOptions { SizeLimit = _options.MaxEntries });
    }

    public int Count => _entries.Count;

    public static string CacheKey(string partner, string partnerApiKey, string clientSecret)
    {
        var bytes = Encoding.UTF8.GetBytes($"{partner}\n{partnerApiKey}\n{clientSecret}");
        return Convert.ToBase64String(SHA256.HashData(bytes));
    }

    /// <summary>The cached validation, if any; a key invalidated meanwhile comes back as <c>InvalidClientSecret</c>.</summary>
    public CachedValidation? Get(string cacheKey)
    {
        if (!_entries.TryGetValue(cacheKey, out CachedValidation? entry) || entry is null)
        {
            return null;
        }

        if (entry.Result.KeyId is { } keyId && IsInvalidated(keyId))
        {
            _entries.Remove(cacheKey);
            return new CachedValidation(new PartnerAuthResult(PartnerAuthStatus.InvalidClientSecret), DateTimeOffset.MaxValue);
        }

        return entry;
    }

    public void Set(string cacheKey, PartnerAuthResult result)
    {
        var now = _time.GetUtcNow();
        var authenticated = result.IsAuthenticated;
        var fresh = TimeSpan.FromSeconds(authenticated ? _options.ValidTtlSeconds : _options.InvalidTtlSeconds);
        if (fresh <= TimeSpan.Zero)
        {
            return;
        }

        var lifetime = authenticated ? fresh + TimeSpan.FromSeconds(_options.StaleIfErrorSeconds) : fresh;
        _entries.Set(cacheKey, new CachedValidation(result, now + fresh), new MemoryCacheEntryOptions
        {
            AbsoluteExpirationRelativeToNow = lifetime,
            Size = 1,
        });
    }

    /// <summary>Evicts every cached validation of the key, now and for as long as an entry of it could still exist.</summary>
    public void Invalidate(Guid keyId)
    {
        var now = _time.GetUtcNow();
        _tombstones[keyId] = now + TimeSpan.FromSeconds(_options.ValidTtlSeconds + _options.StaleIfErrorSeconds) + TombstoneMargin;
        foreach (var (id, until) in _tombstones)
        {
            if (until < now)
            {
                _tombstones.TryRemove(new KeyValuePair<Guid, DateTimeOffset>(id, until));
            }
        }
    }

    public bool IsInvalidated(Guid keyId) => _tombstones.TryGetValue(keyId, out var until) && until >= _time.GetUtcNow();

    /// <summary>Forgets every validation (not the tombstones): used when invalidation events may have been missed.</summary>
    public void Clear() => _entries.Clear();

    public void Dispose() => _entries.Dispose();
}
