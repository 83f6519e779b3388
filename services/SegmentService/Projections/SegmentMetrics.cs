using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using CohortBridge.SegmentService.Filters;

namespace CohortBridge.SegmentService.Projections;

/// <summary>
/// The service's own instruments on meter <c>CohortBridge.SegmentService</c>:
/// <c>cohortbridge.segments.evaluation.duration</c> (histogram, seconds, tag <c>operation</c> = size | check | members |
/// evaluate), <c>cohortbridge.segments.projection.versions_behind</c> (gauge per cohort: versions CohortService is
/// known to have that this replica has not applied) and <c>cohortbridge.segments.projection.event_lag</c> (gauge per
/// cohort: seconds between the last applied event's occurred_at and its application).
/// </summary>
public sealed class SegmentMetrics
{
    private readonly Histogram<double> _evaluation;
    private readonly ConcurrentDictionary<(string Workspace, CohortKey Cohort), double> _eventLag = new();

    public SegmentMetrics(IMeterFactory meterFactory, ProjectionStore store)
    {
        var meter = meterFactory.Create(SegmentServiceHosting.MeterName);
        _evaluation = meter.CreateHistogram(
            "cohortbridge.segments.evaluation.duration",
            unit: "s",
            description: "Time to evaluate a segment filter (size, membership check, member stream set-up, ad-hoc evaluation).",
            advice: new InstrumentAdvice<double>
            {
                HistogramBucketBoundaries = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
            });
        meter.CreateObservableGauge(
            "cohortbridge.segments.projection.versions_behind",
            () => store.Workspaces.SelectMany(ws => ws.Lag().Select(l => new Measurement<long>(
                l.Behind, Tags(ws.WorkspaceId, l.Cohort)))),
            unit: "{version}",
            description: "Cohort versions known to exist in CohortService but not yet applied by this replica.");
        meter.CreateObservableGauge(
            "cohortbridge.segments.projection.event_lag",
            () => _eventLag.Select(e => new Measurement<double>(e.Value, Tags(e.Key.Workspace, e.Key.Cohort))),
            unit: "s",
            description: "Seconds between a cohort's last applied CohortUpdated (occurred_at) and its application here.");
    }

    public void RecordEvaluation(string operation, TimeSpan elapsed) =>
        _evaluation.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("operation", operation));

    public void RecordEventLag(string workspaceId, CohortKey cohort, TimeSpan lag) =>
        _eventLag[(workspaceId, cohort)] = Math.Max(0, lag.TotalSeconds);

    private static KeyValuePair<string, object?>[] Tags(string workspaceId, CohortKey cohort) =>
    [
        new("workspace_id", workspaceId),
        new("partner", cohort.Partner),
        new("cohort_id", cohort.CohortId),
    ];
}
