using System.Diagnostics;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Filters;

namespace CohortBridge.Benchmarks;

/// <summary>
/// The segment evaluations SegmentService runs (its own bitmap and evaluator code), timed in process on the real
/// cohorts' ordinals so HTTP and scheduling noise stay out of the figures: the size query's count
/// (<see cref="ChunkEvaluator.Count"/>, the figure compared with SQL's <c>count(*)</c>) and the member set the member
/// stream writes from (<see cref="FilterEvaluator.Evaluate"/>).
/// </summary>
internal static class InServiceEvaluation
{
    /// <summary>
    /// A running service has long since tiered its evaluator up to optimised code; a few hundred calls are not enough
    /// for that (the JIT promotes methods after a quiet period), and measured tier-0 code at 1.1 ms instead of 0.17 ms.
    /// </summary>
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(3);

    public sealed record Result(long Size, double CountMedianMs, double MembersMedianMs, double BytesPerMember);

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
        var (size, countMs) = Time(() => ChunkEvaluator.Count(filter, source));
        var (members, membersMs) = Time(() => FilterEvaluator.Evaluate(filter, source).Cardinality);
        if (members != size)
        {
            throw new InvalidOperationException($"the evaluators disagree: count {size}, member set {members}");
        }

        var bytes = source.Cohorts.Values.Sum(bm => (long)bm.Serialize().Length);
        var cohortMembers = source.Cohorts.Values.Sum(bm => bm.Cardinality);
        return new Result(size, countMs, membersMs, (double)bytes / Math.Max(1, cohortMembers));
    }

    /// <summary>The result and the median of 200 timed runs after the warm-up.</summary>
    private static (long Result, double MedianMs) Time(Func<long> evaluate)
    {
        long result = 0;
        var warmUp = Stopwatch.StartNew();
        while (warmUp.Elapsed < WarmUp)
        {
            result = evaluate();
        }

        var times = new List<double>();
        for (var i = 0; i < 200; i++)
        {
            var sw = Stopwatch.StartNew();
            result = evaluate();
            times.Add(sw.Elapsed.TotalMilliseconds);
        }

        return (result, Stats.Median(times));
    }

    private sealed class Source(RoaringBitmap live, Dictionary<CohortKey, RoaringBitmap> cohorts) : IAudienceSource
    {
        public Dictionary<CohortKey, RoaringBitmap> Cohorts { get; } = cohorts;

        public RoaringBitmap LiveUsers { get; } = live;

        public RoaringBitmap? CohortMembers(CohortKey cohort) => Cohorts.GetValueOrDefault(cohort);
    }
}
