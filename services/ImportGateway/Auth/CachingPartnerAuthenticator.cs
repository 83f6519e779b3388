using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Text.Json;

namespace CohortBridge.ImportGateway.Auth;

/// <summary>
/// Answers from this replica's <see cref="DataImportKeyCache"/>; on a miss asks KeyService once (concurrent requests
/// with the same credentials share one call) and caches the answer, valid or not. When KeyService cannot be reached,
/// keys still in the cache keep working and anything else is <see cref="PartnerAuthStatus.Unavailable"/>.
/// </summary>
public sealed class CachingPartnerAuthenticator : IPartnerAuthenticator
{
    private static readonly PartnerAuthResult InvalidPartnerApiKey = new(PartnerAuthStatus.InvalidPartnerApiKey);
    private static readonly PartnerAuthResult InvalidClientSecret = new(PartnerAuthStatus.InvalidClientSecret);
    private static readonly PartnerAuthResult PartnerNotEnabled = new(PartnerAuthStatus.PartnerNotEnabled);
    private static readonly PartnerAuthResult Unavailable = new(PartnerAuthStatus.Unavailable);

    private readonly ConcurrentDictionary<string, Lazy<Task<PartnerAuthResult?>>> _inflight = new();
    private readonly DataImportKeyCache _cache;
    private readonly IServiceProvider _services;
    private readonly KeyUsageReporter _usage;
    private readonly TimeProvider _time;
    private readonly ILogger<CachingPartnerAuthenticator> _logger;
    private readonly Counter<long> _lookups;

    public CachingPartnerAuthenticator(
        DataImportKeyCache cache, IServiceProvider services, KeyUsageReporter usage, TimeProvider time,
        IMeterFactory meters, ILogger<CachingPartnerAuthenticator> logger)
    {
        _cache = cache;
        _services = services;
        _usage = usage;
        _time = time;
        _logger = logger;
        _lookups = meters.Create(ImportGatewayHosting.MeterName).CreateCounter<long>(
            "cohortbridge.gateway.key_cache.lookups", description: "Partner authentications by cache outcome (hit, miss, stale, unavailable).");
    }

    public async Task<PartnerAuthResult> AuthenticateAsync(string partner, string? partnerApiKey, string? clientSecret, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(partnerApiKey))
        {
            return InvalidPartnerApiKey;
        }

        if (string.IsNullOrEmpty(clientSecret))
        {
            return InvalidClientSecret;
        }

        var cacheKey = DataImportKeyCache.CacheKey(partner, partnerApiKey, clientSecret);
        var cached = _cache.Get(cacheKey);
        if (cached is not null && cached.FreshUntil > _time.GetUtcNow())
        {
            Count("hit");
            return Used(cached.Result);
        }

        var fetched = await FetchAsync(cacheKey, partner, partnerApiKey, clientSecret, ct);
        if (fetched is not null)
        {
            Count("miss");
            return Used(fetched);
        }

        // KeyService is unreachable: a valid key seen recently still works (it cannot have been invalidated since,
        // as invalidation goes through KeyService; a tombstone would have removed it from the cache).
        if (cached is { Result.IsAuthenticated: true })
        {
            Count("stale");
            return Used(cached.Result);
        }

        Count("unavailable");
        return Unavailable;
    }

    private PartnerAuthResult Used(PartnerAuthResult result)
    {
        if (result.KeyId is { } keyId)
        {
            _usage.Record(keyId);
        }

        return result;
    }

    private void Count(string outcome) => _lookups.Add(1, new KeyValuePair<string, object?>("outcome", outcome));

    /// <summary>One KeyService call per credentials at a time; null when KeyService could not answer.</summary>
    private async Task<PartnerAuthResult?> FetchAsync(
        string cacheKey, string partner, string partnerApiKey, string clientSecret, CancellationToken ct)
    {
        var call = _inflight.GetOrAdd(cacheKey, _ => new Lazy<Task<PartnerAuthResult?>>(
            () => AskKeyServiceAsync(cacheKey, partner, partnerApiKey, clientSecret)));
        try
        {
            // The shared call is not cancelled by one caller giving up; that caller just stops waiting.
            return await call.Value.WaitAsync(ct);
        }
        finally
        {
            _inflight.TryRemove(new KeyValuePair<string, Lazy<Task<PartnerAuthResult?>>>(cacheKey, call));
        }
    }

    private async Task<PartnerAuthResult?> AskKeyServiceAsync(string cacheKey, string partner, string partnerApiKey, string clientSecret)
    {
        try
        {
            var client = _services.GetRequiredService<KeyServiceClient>();
            var answer = await client.ValidateAsync(partner, partnerApiKey, clientSecret, CancellationToken.None);
            var result = answer.Result switch
            {
                "valid" when answer.WorkspaceId is not null && answer.KeyId is { } keyId =>
                    _cache.IsInvalidated(keyId) ? InvalidClientSecret : new PartnerAuthResult(PartnerAuthStatus.Authenticated, answer.WorkspaceId, keyId),
                "invalid_partner_api_key" => InvalidPartnerApiKey,
                "invalid_client_secret" => InvalidClientSecret,
                "partner_not_enabled" => PartnerNotEnabled,
                _ => throw new HttpRequestException("KeyService sent an unknown validation result."),
            };
            _cache.Set(cacheKey, result);
            return result;
        }
        catch (Exception ex) when (ex is HttpRequestException or Polly.ExecutionRejectedException or OperationCanceledException
                                       or JsonException or NotSupportedException)
        {
            AuthLog.KeyServiceUnavailable(_logger, partner, ex);
            return null;
        }
    }
}
