namespace CohortBridge.CohortService.Snapshots;

/// <summary>
/// Snapshot settings, in the <c>Cohorts</c> section with the other CohortService settings
/// (environment: <c>Cohorts__SnapshotTimeoutMinutes</c>, <c>Cohorts__SnapshotSweepIntervalSeconds</c>).
/// </summary>
public sealed class SnapshotOptions
{
    public const string SectionName = "Cohorts";

    /// <summary>A snapshot without a new chunk for this long is failed and its staging rows removed.</summary>
    public double SnapshotTimeoutMinutes { get; set; } = 30;

    /// <summary>How often the sweeper looks for such snapshots.</summary>
    public double SnapshotSweepIntervalSeconds { get; set; } = 30;

    public TimeSpan Timeout => TimeSpan.FromMinutes(SnapshotTimeoutMinutes);

    public TimeSpan SweepInterval => TimeSpan.FromSeconds(Math.Max(0.1, SnapshotSweepIntervalSeconds));
}
