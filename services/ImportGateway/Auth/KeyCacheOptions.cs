using System.ComponentModel.DataAnnotations;

namespace CohortBridge.ImportGateway.Auth;

/// <summary>Section <c>KeyCache</c>: the gateway's cache of key validations and its calls to KeyService.</summary>
public sealed class KeyCacheOptions
{
    public const string SectionName = "KeyCache";

    /// <summary>
    /// How long a valid key is answered from the cache before KeyService is asked again. Invalidation normally reaches
    /// every replica within a second through <c>DataImportKeyInvalidated</c>; this bounds it if that event were lost.
    /// </summary>
    [Range(1, 60)]
    public int ValidTtlSeconds { get; set; } = 60;

    /// <summary>How long a refusal is cached, so that a flood of bad keys cannot overload KeyService.</summary>
    [Range(0, 60)]
    public int InvalidTtlSeconds { get; set; } = 5;

    /// <summary>
    /// While KeyService cannot be reached, a valid key whose cache lifetime ended keeps working this much longer
    /// (0 = never). Keys can only be invalidated through KeyService, so this does not extend an invalidation.
    /// </summary>
    [Range(0, 3600)]
    public int StaleIfErrorSeconds { get; set; } = 300;

    /// <summary>Most entries (valid and invalid) held; beyond it new entries are not cached until space frees up.</summary>
    [Range(100, 10_000_000)]
    public int MaxEntries { get; set; } = 100_000;

    /// <summary>How often the key uses seen by this replica are reported to KeyService (for last_used_at).</summary>
    [Range(0.1, 3600)]
    public double UsageReportIntervalSeconds { get; set; } = 10;

    /// <summary>Time limit of one call to KeyService.</summary>
    [Range(0.1, 60)]
    public double AttemptTimeoutSeconds { get; set; } = 2;

    /// <summary>Time limit of one validation including retries.</summary>
    [Range(0.1, 120)]
    public double TotalTimeoutSeconds { get; set; } = 5;

    /// <summary>Retries after a failed call to KeyService (transient errors, 5xx, timeouts).</summary>
    [Range(0, 10)]
    public int Retries { get; set; } = 2;

    /// <summary>How long the circuit stays open after KeyService kept failing.</summary>
    [Range(0.5, 600)]
    public double BreakSeconds { get; set; } = 5;
}
