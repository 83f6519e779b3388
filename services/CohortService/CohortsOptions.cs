namespace CohortBridge.CohortService;

/// <summary>Settings of section <c>Cohorts</c> (environment: <c>Cohorts__InlineChangeLimit</c>, ...).</summary>
public sealed class CohortsOptions
{
    public const string SectionName = "Cohorts";

    /// <summary>
    /// Largest number of added + removed users a CohortUpdated carries inline; above it Added/Removed are null and
    /// MustReread is true.
    /// </summary>
    public int InlineChangeLimit { get; set; } = 1000;

    /// <summary>Users per UserDirectoryChanged message.</summary>
    public int DirectoryBatchSize { get; set; } = 1000;

    /// <summary>Partitions of the CohortExportReceived consumer (one cohort always maps to one partition).</summary>
    public int PartitionCount { get; set; } = 16;

    /// <summary>Messages the CohortExportReceived consumer handles at once (across cohorts).</summary>
    public int ConcurrentMessageLimit { get; set; } = 8;

    /// <summary>How often the outbox dispatcher looks for rows that an immediate publish did not take.</summary>
    public TimeSpan OutboxPollInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Largest number of errors a bulk upsert response lists (all rejected lines are counted).</summary>
    public int MaxReportedErrors { get; set; } = 1000;

    public CohortsTestHooks TestHooks { get; set; } = new();
}

/// <summary>Fault injection for tests only; never set in production.</summary>
public sealed class CohortsTestHooks
{
    /// <summary>
    /// When the import with this id has been committed, the process ends at once (Environment.FailFast) before
    /// publishing CohortUpdated: a crash between commit and publish.
    /// </summary>
    public Guid? CrashAfterCommitImportId { get; set; }
}
