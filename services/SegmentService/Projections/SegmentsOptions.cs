namespace CohortBridge.SegmentService.Projections;

/// <summary>Configuration section <c>Segments</c>.</summary>
public sealed class SegmentsOptions
{
    public const string SectionName = "Segments";

    /// <summary>
    /// Names this replica's queues (<c>segments-cohort-updated-{instance}</c>, <c>segments-user-directory-changed-{instance}</c>):
    /// every replica needs its own, stable across restarts (e.g. a StatefulSet pod name). Default: the machine name.
    /// </summary>
    public string InstanceId { get; set; } = Environment.MachineName;

    /// <summary>How long start-up waits for CohortService before reporting ready with the persisted projection.</summary>
    public int StartupCatchUpTimeoutSeconds { get; set; } = 30;

    /// <summary>Pause between catch-up attempts while CohortService is unreachable.</summary>
    public int CatchUpRetrySeconds { get; set; } = 5;

    /// <summary>
    /// A whole-directory read that receives nothing for this long is abandoned and retried: the workspace's directory
    /// events wait for the read, so a stalled stream must not hold them for ever.
    /// </summary>
    public int DirectoryReadIdleSeconds { get; set; } = 120;

    /// <summary>How long the read paths keep a segment definition in memory (0 = always read the database).</summary>
    public double SegmentCacheSeconds { get; set; } = 1;

    /// <summary>Members in the <c>sample</c> of an ad-hoc evaluation.</summary>
    public int SampleSize { get; set; } = 20;

    /// <summary>The instance id as it may appear in a queue name: lower case letters, digits and '-'.</summary>
    public string QueueSuffix()
    {
        var instance = string.IsNullOrWhiteSpace(InstanceId) ? Environment.MachineName : InstanceId;
        var chars = instance.ToLowerInvariant().Select(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') ? c : '-').ToArray();
        var suffix = new string(chars).Trim('-');
        return suffix.Length == 0 ? "default" : suffix[..Math.Min(suffix.Length, 100)];
    }
}
