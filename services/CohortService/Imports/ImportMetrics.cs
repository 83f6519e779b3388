using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Per-stage timings of applying imports, on the service meter <c>CohortBridge.CohortService</c> (seconds):
/// <c>cohortbridge.cohorts.import.lock_wait</c> (import, workspace and cohort row locks),
/// <c>.match</c> (identity matching of an import's change sets, or of a complete snapshot's staged identifiers),
/// <c>.apply</c> (membership writes, version, change log, statistics and event of one import, matching excluded), <c>.commit</c> (one transaction's commit),
/// <c>.publish</c> (one CohortUpdated publish, confirm included), and <c>cohortbridge.cohorts.import.batch_size</c>
/// (imports applied in one transaction), <c>cohortbridge.cohorts.import.sequence_wait</c> (an import waiting for its
/// cohort's previous request) and <c>cohortbridge.cohorts.import.sequence_gaps_skipped</c> (previous requests given up
/// after <c>Cohorts:SequenceGapTimeout</c>) and <c>cohortbridge.cohorts.import.expired_refused</c> (imports refused
/// after <c>Cohorts:ImportRetention</c>). Static because the matcher and handlers are static/singleton code paths.
/// </summary>
public static class ImportMetrics
{
    private static readonly Meter Meter = new(CohortServiceHosting.MeterName);

    private static readonly InstrumentAdvice<double> SecondsAdvice = new()
    {
        HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    };

    private static readonly Histogram<double> LockWaitSeconds = Seconds("lock_wait", "Waiting for the import, workspace and cohort row locks");
    private static readonly Histogram<double> MatchSeconds = Seconds("match", "Matching the identifiers of one import to users");
    private static readonly Histogram<double> ApplySeconds = Seconds("apply", "Applying one import (membership, version, change log, statistics; matching excluded)");
    private static readonly Histogram<double> CommitSeconds = Seconds("commit", "Committing one import transaction");
    private static readonly Histogram<double> PublishSeconds = Seconds("publish", "Publishing one CohortUpdated (broker confirm included)");

    private static readonly Histogram<double> SequenceWaitSeconds = Seconds("sequence_wait", "Waiting for the cohort's previous request to be applied");

    private static readonly Counter<long> SequenceGapsSkipped = Meter.CreateCounter<long>(
        "cohortbridge.cohorts.import.sequence_gaps_skipped", "{import}",
        "Imports applied without their cohort's previous request, which did not arrive within Cohorts:SequenceGapTimeout");

    private static readonly Counter<long> ExpiredRefusedCount = Meter.CreateCounter<long>(
        "cohortbridge.cohorts.import.expired_refused", "{import}",
        "Imports refused to the error queue: accepted before Cohorts:ImportRetention, with no import row left to tell whether they were applied");

    private static readonly Histogram<int> BatchSize = Meter.CreateHistogram(
        "cohortbridge.cohorts.import.batch_size", "{import}", "Imports of one cohort applied in one transaction",
        advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128] });

    public static void LockWait(TimeSpan elapsed) => LockWaitSeconds.Record(elapsed.TotalSeconds);

    public static void Match(TimeSpan elapsed) => MatchSeconds.Record(elapsed.TotalSeconds);

    public static void Apply(TimeSpan elapsed) => ApplySeconds.Record(elapsed.TotalSeconds);

    public static void Commit(TimeSpan elapsed) => CommitSeconds.Record(elapsed.TotalSeconds);

    public static void Publish(TimeSpan elapsed) => PublishSeconds.Record(elapsed.TotalSeconds);

    public static void SequenceWait(TimeSpan elapsed) => SequenceWaitSeconds.Record(elapsed.TotalSeconds);

    public static void SequenceGapSkipped() => SequenceGapsSkipped.Add(1);

    public static void ExpiredRefused() => ExpiredRefusedCount.Add(1);

    public static void Batch(int imports) => BatchSize.Record(imports);

    /// <summary>Elapsed time since a <see cref="Stopwatch.GetTimestamp"/> value.</summary>
    public static TimeSpan Since(long timestamp) => Stopwatch.GetElapsedTime(timestamp);

    private static Histogram<double> Seconds(string stage, string description) =>
        Meter.CreateHistogram($"cohortbridge.cohorts.import.{stage}", "s", description, advice: SecondsAdvice);
}
