using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;

namespace CohortBridge.ImportGateway.Imports;

/// <summary>
/// A token bucket per client secret. Partitions are keyed by a SHA-256 digest of the secret, never the secret itself,
/// so nothing that reaches memory dumps, logs or metrics can be replayed as a credential. Per replica: with N replicas a
/// client gets up to N times the configured rate (the limit protects the bus and CohortService, not a billing quota).
/// </summary>
public sealed class ClientRateLimiter : IDisposable
{
    private readonly PartitionedRateLimiter<string> _limiter;
    private readonly TimeSpan _period;

    public ClientRateLimiter(IOptions<GatewayOptions> options)
    {
        var o = options.Value;
        _period = o.RateLimitReplenishmentPeriod;
        var bucket = new TokenBucketRateLimiterOptions
        {
            TokenLimit = Math.Max(1, o.RateLimitTokenLimit),
            TokensPerPeriod = Math.Max(1, o.RateLimitTokensPerPeriod),
            ReplenishmentPeriod = o.RateLimitReplenishmentPeriod,
            QueueLimit = 0,
            AutoReplenishment = true,
        };
        _limiter = PartitionedRateLimiter.Create<string, string>(key => RateLimitPartition.GetTokenBucketLimiter(key, _ => bucket));
    }

    /// <summary>Takes one token; when none is left, returns the seconds after which to retry.</summary>
    public int? TryAcquire(string clientSecret)
    {
        using var lease = _limiter.AttemptAcquire(PartitionKey(clientSecret));
        if (lease.IsAcquired)
        {
            return null;
        }

        var retryAfter = lease.TryGetMetadata(MetadataName.RetryAfter, out var after) ? after : _period;
        return (int)Math.Max(1, Math.Ceiling(retryAfter.TotalSeconds));
    }

    private static string PartitionKey(string clientSecret) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(clientSecret)).AsSpan(0, 16));

    public void Dispose() => _limiter.Dispose();
}
