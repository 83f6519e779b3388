namespace CohortBridge.ImportGateway;

/// <summary>Gateway settings, section <c>Gateway</c> (environment: <c>Gateway__MaxBodyBytes</c>, ...).</summary>
public sealed class GatewayOptions
{
    public const string SectionName = "Gateway";

    /// <summary>user_ids + device_ids + aliases allowed in one request (all changes together).</summary>
    public int MaxIdentifiersPerRequest { get; set; } = 1000;

    /// <summary>Largest accepted body of the two POST endpoints; above it: 413.</summary>
    public long MaxBodyBytes { get; set; } = 1_048_576;

    /// <summary>The base URL partners use (for links and the OpenAPI server entry).</summary>
    public string? PublicBaseUrl { get; set; }

    /// <summary>Token bucket per client secret: burst size.</summary>
    public int RateLimitTokenLimit { get; set; } = 2000;

    /// <summary>Token bucket per client secret: tokens added every <see cref="RateLimitReplenishmentPeriod"/>.</summary>
    public int RateLimitTokensPerPeriod { get; set; } = 1000;

    public TimeSpan RateLimitReplenishmentPeriod { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Longest wait for one broker confirm before the publish is retried.</summary>
    public TimeSpan PublishAttemptTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Longest a request waits for the bus in total (all attempts) before answering 503.</summary>
    public TimeSpan PublishTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Publish retries after the first attempt.</summary>
    public int PublishRetries { get; set; } = 2;

    /// <summary>How long an in-flight Idempotency-Key claim blocks a concurrent duplicate before it may be taken over.</summary>
    public TimeSpan IdempotencyLease { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long idempotency records are kept.</summary>
    public TimeSpan IdempotencyRetention { get; set; } = TimeSpan.FromHours(24);

    /// <summary>
    /// How long an import's status can be read: after it the gateway answers 404 for it and deletes it from its
    /// register of accepted imports. Keep it equal to CohortService's <c>Cohorts:ImportRetention</c>, which deletes the
    /// import's status there. Zero or less keeps everything.
    /// </summary>
    public TimeSpan ImportRetention { get; set; } = TimeSpan.FromDays(30);

    /// <summary>How often expired idempotency records and accepted imports are deleted.</summary>
    public TimeSpan PurgeInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Retry-After (seconds) sent with 503.</summary>
    public int UnavailableRetryAfterSeconds { get; set; } = 5;
}
