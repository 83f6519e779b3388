namespace CohortBridge.ImportGateway.Snapshots;

/// <summary>
/// Snapshot import settings. They live in the <c>Gateway</c> section next to the other gateway settings
/// (environment: <c>Gateway__SnapshotChunkSize</c>, <c>Gateway__MaxSnapshotBytes</c>, ...).
/// </summary>
public sealed class SnapshotOptions
{
    public const string SectionName = "Gateway";

    /// <summary>Identifiers (valid or not) per published chunk.</summary>
    public int SnapshotChunkSize { get; set; } = 10_000;

    /// <summary>Largest snapshot body; above it the import is aborted and the request answers 413.</summary>
    public long MaxSnapshotBytes { get; set; } = 2L * 1024 * 1024 * 1024;

    /// <summary>Chunks published and not yet confirmed by the broker at once (throughput vs. memory).</summary>
    public int SnapshotPublishesInFlight { get; set; } = 4;

    /// <summary>Longest line accepted; a longer line is counted as one invalid identifier and skipped.</summary>
    public int MaxSnapshotLineBytes { get; set; } = 16 * 1024;

    /// <summary>Characters of an invalid line kept as its sample (every invalid line is counted).</summary>
    public int InvalidSampleLength { get; set; } = 64;
}
