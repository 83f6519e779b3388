using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Filters;
using CohortBridge.SegmentService.Tests.Bitmaps;
using CsCheck;

namespace CohortBridge.SegmentService.Tests.Filters;

/// <summary>The filter evaluator against a set-based model of the API.md semantics.</summary>
public sealed class FilterEvaluatorPropertyTests
{
    private const int Cohorts = 5;

    /// <summary>
    /// A workspace over three chunks: live users and cohorts, dense (bitset chunks), sparse (array chunks) or around
    /// the 4,096 threshold; cohort members need not be live users (the directory and the cohorts arrive on separate
    /// queues); cohort 4 is archived; cohort "unknown" does not exist.
    /// </summary>
    private static readonly Gen<ModelWorkspace> Workspaces =
        Gen.Select(
            Gen.Frequency((2, Gen.Int[0, 140_000].Array[0, 24_000]), (1, Gen.Int[0, 140_000].Array[0, 3000])),
            Gen.Frequency(
                (2, Gen.Int[0, 140_000].Array[0, 15_000]),
                (1, Gen.Int[60_000, 75_000].Array[4000, 9000]),
                (2, Gen.Int[0, 140_000].Array[0, 300])).Array[Cohorts],
            (live, cohorts) => new ModelWorkspace(live.ToHashSet(), cohorts.Select(c => c.ToHashSet()).ToArray()));

    private static readonly Gen<Filter> Filters = FilterGen(4);

    private static Gen<Filter> FilterGen(int depth)
    {
        var leaf = Gen.Select(Gen.Int[0, Cohorts], Gen.Bool, (c, excludes) =>
            (Filter)new CohortFilter(new CohortKey("tinyclues", c == Cohorts ? "unknown" : $"c{c}"), excludes));
        if (depth == 0)
        {
            return leaf;
        }

        var sub = FilterGen(depth - 1);
        return Gen.Frequency(
            (3, leaf),
            (1, sub.Array[1, 4].Select(a => (Filter)new AndFilter(a))),
            (1, sub.Array[1, 4].Select(a => (Filter)new OrFilter(a))),
            (1, sub.Select(f => (Filter)new NotFilter(f))));
    }

    [Fact]
    public void Evaluate_RandomFilter_MatchesSetModel()
    {
        Gen.Select(Workspaces, Filters).Sample((workspace, filter) =>
        {
            var source = workspace.ToSource();
            var expected = workspace.Evaluate(filter);
            RoaringBitmapPropertyTests.AssertSame(expected, FilterEvaluator.Evaluate(filter, source));
        }, iter: 300);
    }

    [Fact]
    public void ChunkEvaluator_CountAndFirstMembers_MatchSetModel()
    {
        Gen.Select(Workspaces, Filters, Gen.Int[0, 40]).Sample((workspace, filter, n) =>
        {
            var source = workspace.ToSource();
            var expected = workspace.Evaluate(filter);
            Assert.Equal(expected.Count, ChunkEvaluator.Count(filter, source));
            var first = new int[n];
            var written = ChunkEvaluator.CopyFirst(filter, source, first);
            Assert.Equal(expected.Order().Take(n).ToArray(), first[..written]);
        }, iter: 300);
    }

    [Fact]
    public void Contains_RandomFilterAndOrdinal_MatchesSetModel()
    {
        Gen.Select(Workspaces, Filters, Gen.Int[0, 140_000].Array[20]).Sample((workspace, filter, probes) =>
        {
            var source = workspace.ToSource();
            var expected = workspace.Evaluate(filter);
            foreach (var ordinal in probes.Concat(workspace.Live.Take(10)).Concat(workspace.Members[0].Take(10)))
            {
                Assert.Equal(expected.Contains(ordinal), FilterEvaluator.Contains(filter, source, ordinal));
            }
        }, iter: 300);
    }

    [Fact]
    public void Parse_CanonicalJson_RoundTrips()
    {
        Filters.Sample(filter =>
        {
            var json = filter.ToJson();
            Assert.Equal(json, FilterParser.Parse(json).ToJson());
        }, iter: 300);
    }

    [Fact]
    public void Evaluate_Operands_AreNotModified()
    {
        Gen.Select(Workspaces, Filters).Sample((workspace, filter) =>
        {
            var source = workspace.ToSource();
            FilterEvaluator.Evaluate(filter, source);
            RoaringBitmapPropertyTests.AssertSame(workspace.Live, source.LiveUsers);
            for (var c = 0; c < Cohorts - 1; c++)
            {
                RoaringBitmapPropertyTests.AssertSame(workspace.Members[c], source.CohortMembers(new CohortKey("tinyclues", $"c{c}"))!);
            }
        }, iter: 100);
    }

    [Theory]
    [InlineData("[]", "filter must be an object")]
    [InlineData("""{}""", "filter is empty")]
    [InlineData("""{"and": []}""", "filter.and must be a non-empty array")]
    [InlineData("""{"or": {}}""", "filter.or must be a non-empty array")]
    [InlineData("""{"and": [{"cohort": {"partner": "p"}, "op": "includes"}]}""", "filter.and[0].cohort.cohort_id must be a non-empty string")]
    [InlineData("""{"cohort": {"partner": "p", "cohort_id": "c"}, "op": "contains"}""", "filter.op must be \"includes\" or \"excludes\"")]
    [InlineData("""{"cohort": {"partner": "p", "cohort_id": "c"}}""", "filter.op must be")]
    [InlineData("""{"cohort": {"partner": "p", "cohort_id": "c"}, "op": "includes", "x": 1}""", "unknown key 'x'")]
    [InlineData("""{"not": {"xor": []}}""", "filter.not has unknown key 'xor'")]
    [InlineData("""{"and": [], "or": []}""", "exactly one of")]
    public void Parse_InvalidFilter_ThrowsWithPath(string json, string message)
    {
        var ex = Assert.Throws<FilterFormatException>(() => FilterParser.Parse(json));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_DeepNesting_IsRejected()
    {
        var json = string.Concat(Enumerable.Repeat("""{"not": """, 40)) + """{"cohort": {"partner": "p", "cohort_id": "c"}, "op": "includes"}""" + new string('}', 40);
        var ex = Assert.Throws<FilterFormatException>(() => FilterParser.Parse(json));
        Assert.Contains("nest at most", ex.Message, StringComparison.Ordinal);
    }

    private sealed record ModelWorkspace(HashSet<int> Live, HashSet<int>[] Members)
    {
        public IAudienceSource ToSource() => new Source(
            RoaringBitmap.FromValues(Live),
            Members.Select(RoaringBitmap.FromValues).ToArray());

        /// <summary>API.md: includes = members (archived: none), excludes/not = relative to the live users.</summary>
        public HashSet<int> Evaluate(Filter filter)
        {
            switch (filter)
            {
                case CohortFilter c:
                {
                    var members = MembersOf(c.Cohort);
                    if (!c.Excludes)
                    {
                        return members;
                    }

                    var result = Live.ToHashSet();
                    result.ExceptWith(members);
                    return result;
                }

                case NotFilter n:
                {
                    var result = Live.ToHashSet();
                    result.ExceptWith(Evaluate(n.Operand));
                    return result;
                }

                case AndFilter a:
                {
                    var result = Evaluate(a.Operands[0]);
                    foreach (var o in a.Operands.Skip(1))
                    {
                        result.IntersectWith(Evaluate(o));
                    }

                    return result;
                }

                case OrFilter o:
                {
                    var result = new HashSet<int>();
                    foreach (var x in o.Operands)
                    {
                        result.UnionWith(Evaluate(x));
                    }

                    return result;
                }

                default:
                    throw new InvalidOperationException();
            }
        }

        private HashSet<int> MembersOf(CohortKey cohort)
        {
            var index = cohort.CohortId == "unknown" ? -1 : int.Parse(cohort.CohortId[1..], System.Globalization.CultureInfo.InvariantCulture);
            return index is < 0 or Cohorts - 1 ? [] : Members[index].ToHashSet();
        }
    }

    private sealed class Source(RoaringBitmap live, RoaringBitmap[] cohorts) : IAudienceSource
    {
        public RoaringBitmap LiveUsers => live;

        public RoaringBitmap? CohortMembers(CohortKey cohort)
        {
            if (cohort.CohortId == "unknown")
            {
                return null;
            }

            var index = int.Parse(cohort.CohortId[1..], System.Globalization.CultureInfo.InvariantCulture);

            // Cohort 4 is archived: it evaluates as empty.
            return index == Cohorts - 1 ? new RoaringBitmap() : cohorts[index];
        }
    }
}
