using CohortBridge.SegmentService.Bitmaps;

namespace CohortBridge.SegmentService.Filters;

/// <summary>The sets a filter is evaluated over: one consistent view of a workspace's projection.</summary>
public interface IAudienceSource
{
    /// <summary>The workspace's live (existing, not deleted) users.</summary>
    RoaringBitmap LiveUsers { get; }

    /// <summary>The cohort's members (empty when archived), or null when the cohort is unknown.</summary>
    RoaringBitmap? CohortMembers(CohortKey cohort);
}

/// <summary>
/// Evaluates filter trees with bitmap operations. <c>excludes c</c> = live AND-NOT c; <c>not f</c> = live AND-NOT f;
/// an unknown cohort counts as empty (requests validate cohorts before evaluating).
/// </summary>
/// <remarks>
/// An AND is folded from its smallest positive operand, and its negative operands (<c>excludes</c>, <c>not</c>) become
/// AND-NOTs against that running result instead of being materialised against the live users first: for
/// <c>A AND NOT B</c> that is one pass over A rather than two passes over the whole workspace. The result may be one
/// of the source's own bitmaps (no copy): callers must treat it as read-only.
/// </remarks>
public static class FilterEvaluator
{
    public static RoaringBitmap Evaluate(Filter filter, IAudienceSource source) => filter switch
    {
        CohortFilter { Excludes: false } c => Members(c.Cohort, source),
        CohortFilter { Excludes: true } c => RoaringBitmap.AndNot(source.LiveUsers, Members(c.Cohort, source)),
        NotFilter n => RoaringBitmap.AndNot(source.LiveUsers, Evaluate(n.Operand, source)),
        AndFilter a => EvaluateAnd(a.Operands, source),
        OrFilter o => EvaluateOr(o.Operands, source),
        _ => throw new InvalidOperationException("Unknown filter node."),
    };

    /// <summary>Whether one ordinal is matched, without building any set (membership checks).</summary>
    public static bool Contains(Filter filter, IAudienceSource source, int ordinal) => filter switch
    {
        CohortFilter { Excludes: false } c => Members(c.Cohort, source).Contains(ordinal),
        CohortFilter { Excludes: true } c => source.LiveUsers.Contains(ordinal) && !Members(c.Cohort, source).Contains(ordinal),
        NotFilter n => source.LiveUsers.Contains(ordinal) && !Contains(n.Operand, source, ordinal),
        AndFilter a => a.Operands.All(o => Contains(o, source, ordinal)),
        OrFilter o => o.Operands.Any(x => Contains(x, source, ordinal)),
        _ => throw new InvalidOperationException("Unknown filter node."),
    };

    private static RoaringBitmap Members(CohortKey cohort, IAudienceSource source) =>
        source.CohortMembers(cohort) ?? RoaringBitmap.Empty;

    private static RoaringBitmap EvaluateAnd(IReadOnlyList<Filter> operands, IAudienceSource source)
    {
        var positives = new List<RoaringBitmap>(operands.Count);
        var negatives = new List<RoaringBitmap>();
        foreach (var operand in operands)
        {
            switch (operand)
            {
                case CohortFilter { Excludes: true } c:
                    negatives.Add(Members(c.Cohort, source));
                    break;
                case NotFilter n:
                    negatives.Add(Evaluate(n.Operand, source));
                    break;
                default:
                    positives.Add(Evaluate(operand, source));
                    break;
            }
        }

        RoaringBitmap result;
        if (positives.Count == 0)
        {
            result = source.LiveUsers;
        }
        else
        {
            positives.Sort((x, y) => x.Cardinality.CompareTo(y.Cardinality));
            result = positives[0];
            for (var i = 1; i < positives.Count && !result.IsEmpty; i++)
            {
                result = RoaringBitmap.And(result, positives[i]);
            }

            if (negatives.Count > 0 && !result.IsEmpty)
            {
                // Positive operands may hold ordinals the directory no longer lists (eventual consistency); a
                // negative operand is defined relative to the live users, so keep the AND-NOT faithful to that.
                result = RoaringBitmap.And(result, source.LiveUsers);
            }
        }

        foreach (var negative in negatives)
        {
            if (result.IsEmpty)
            {
                break;
            }

            result = RoaringBitmap.AndNot(result, negative);
        }

        return result;
    }

    private static RoaringBitmap EvaluateOr(IReadOnlyList<Filter> operands, IAudienceSource source)
    {
        var result = Evaluate(operands[0], source);
        for (var i = 1; i < operands.Count; i++)
        {
            result = RoaringBitmap.Or(result, Evaluate(operands[i], source));
        }

        return result;
    }
}
