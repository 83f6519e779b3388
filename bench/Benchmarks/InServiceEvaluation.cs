using System.Diagnostics;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Filters;

namespace CohortBridge.Benchmarks;

/// <summary>
/// The segment evaluation SegmentService runs for a size query (its own bitmap and evaluator code), timed in process
/// on the real cohorts' ordinals so HTTP and scheduling noise stay out of the figure.
/// </summary>
internal static class InServiceEvaluation
{
    public sealed record Result(long Size, double MedianMs, double BytesPerMember);

    public static Result Measure(int[] a, int[] b, int[] c, int[] live)
    {
        var keyA = new CohortKey("bench", "a");
        var keyB = new CohortKey("bench", "b");
        var keyC = new CohortKey("bench", "c");
        var source = new Source(RoaringBitmap.FromSorted(live), new Dictionary<CohortKey, RoaringBitmap>
        {
            [keyA] = RoaringBitmap.FromSorted(a),
            [keyB] = RoaringBitmap.FromSorted(b),
            [keyC] = RoaringBitmap.FromSorted(c),
        });

        // A includes AND (B includes OR C excludes): the same tree the benchmark's segment holds.
        var filter = new AndFilter([new CohortFilter(keyA, false), new OrFilter([new CohortFilter(keyB, false), new CohortFilter(keyC, true)])]);
        long size = 0;
        for (var i = 0; i < 20; i++)
        {
            size = FilterEvaluator.Evaluate(filter, source).Cardinality;
        }

        var times = new List<double>();
        for (var i = 0; i < 200; i++)
        {
            var sw = Stopwatch.StartNew();
            size = FilterEvaluator.Evaluate(filter, source).Cardinality;
            times.Add(sw.Elapsed.TotalMilliseconds);
        }

        var bytes = source.Cohorts.Values.Sum(bm => (long)bm.Serialize().Length);
        var members = source.Cohorts.Values.Sum(bm => bm.Cardinality);
        return new Result(size, Stats.Median(times), (double)bytes / Math.Max(1, members));
    }

    private sealed class Source(RoaringBitmap live, Dictionary<CohortKey, RoaringBitmap> cohorts) : IAudienceSource
    {
        public Dictionary<CohortKey, RoaringBitmap> Cohorts { get; } = cohorts;

        public RoaringBitmap LiveUsers { get; } = live;

        public RoaringBitmap? CohortMembers(CohortKey cohort) => Cohorts.GetValueOrDefault(cohort);
    }
}
