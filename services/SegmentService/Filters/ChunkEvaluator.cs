using CohortBridge.SegmentService.Bitmaps;

namespace CohortBridge.SegmentService.Filters;

/// <summary>
/// Evaluates a filter one 65,536-ordinal chunk at a time into reusable 1,024-word buffers and counts the result with
/// popcount, so a size needs no intermediate bitmap at all: for <c>a AND b AND NOT c</c> each chunk is three
/// vectorised word passes and a popcount. Only chunks that can hold a member are visited (an AND visits the chunks of
/// its sparsest operand). Same semantics as <see cref="FilterEvaluator"/> (the property tests hold both to one model).
/// </summary>
public static class ChunkEvaluator
{
    private const int Words = Container.BitsetWords;

    /// <summary>How many users the filter matches.</summary>
    public static long Count(Filter filter, IAudienceSource source)
    {
        var plan = new Plan(Compile(filter, source), source.LiveUsers);
        long total = 0;
        foreach (var key in CandidateKeys(plan.Root, plan.Live))
        {
            plan.Resolve(key);
            if (SparseDriver(plan) is { } driver)
            {
                // Few candidates in this chunk: test each one instead of combining 1,024-word buffers.
                foreach (var low in driver.Span)
                {
                    if (Matches(plan.Root, plan, low))
                    {
                        total++;
                    }
                }

                continue;
            }

            EvaluateInto(plan.Root, key, plan.Buffers, 0, plan.Live);
            total += WordOps.PopCount(plan.Buffers[0]);
        }

        return total;
    }

    /// <summary>The first members in ascending order (at most <paramref name="destination"/>.Length); returns the count.</summary>
    public static int CopyFirst(Filter filter, IAudienceSource source, Span<int> destination)
    {
        var plan = new Plan(Compile(filter, source), source.LiveUsers);
        var n = 0;
        foreach (var key in CandidateKeys(plan.Root, plan.Live))
        {
            if (n == destination.Length)
            {
                break;
            }

            EvaluateInto(plan.Root, key, plan.Buffers, 0, plan.Live);
            var words = plan.Buffers[0];
            for (var i = 0; i < Words && n < destination.Length; i++)
            {
                var w = words[i];
                while (w != 0 && n < destination.Length)
                {
                    destination[n++] = (key << 16) | (i << 6) | System.Numerics.BitOperations.TrailingZeroCount(w);
                    w &= w - 1;
                }
            }
        }

        return n;
    }

    private enum Kind
    {
        Includes,
        Excludes,
        Not,
        And,
        Or,
    }

    private sealed record Node(Kind Kind, RoaringBitmap? Members, Node[] Children)
    {
        /// <summary>Position of a leaf in <see cref="Plan.Leaves"/> (its container per chunk is resolved once).</summary>
        public int Leaf { get; set; } = -1;
    }

    /// <summary>A compiled filter: its tree, its leaves, and reusable buffers.</summary>
    private sealed class Plan
    {
        public Plan(Node root, RoaringBitmap live)
        {
            Root = root;
            Live = live;
            var leaves = new List<Node>();
            Collect(root, leaves);
            Leaves = leaves.ToArray();
            Containers = new Container?[Leaves.Length];
            Buffers = new ulong[Depth(root) + 2][];
            for (var i = 0; i < Buffers.Length; i++)
            {
                Buffers[i] = new ulong[Words];
            }
        }

        public Node Root { get; }
        public RoaringBitmap Live { get; }
        public Node[] Leaves { get; }
        public Container?[] Containers { get; }
        public Container? LiveContainer { get; private set; }
        public ulong[][] Buffers { get; }

        public void Resolve(ushort key)
        {
            LiveContainer = Live.ContainerOf(key);
            for (var i = 0; i < Leaves.Length; i++)
            {
                Containers[i] = Leaves[i].Members!.ContainerOf(key);
            }
        }

        private static void Collect(Node node, List<Node> leaves)
        {
            if (node.Members is not null)
            {
                node.Leaf = leaves.Count;
                leaves.Add(node);
            }

            foreach (var child in node.Children)
            {
                Collect(child, leaves);
            }
        }
    }

    private static Node Compile(Filter filter, IAudienceSource source) => filter switch
    {
        CohortFilter { Excludes: false } c => new Node(Kind.Includes, source.CohortMembers(c.Cohort) ?? RoaringBitmap.Empty, []),
        CohortFilter { Excludes: true } c => new Node(Kind.Excludes, source.CohortMembers(c.Cohort) ?? RoaringBitmap.Empty, []),
        NotFilter n => new Node(Kind.Not, null, [Compile(n.Operand, source)]),
        AndFilter a => new Node(Kind.And, null, a.Operands.Select(o => Compile(o, source)).ToArray()),
        OrFilter o => new Node(Kind.Or, null, o.Operands.Select(x => Compile(x, source)).ToArray()),
        _ => throw new InvalidOperationException("Unknown filter node."),
    };

    private static int Depth(Node node) => node.Children.Length == 0 ? 0 : 1 + node.Children.Max(Depth);

    /// <summary>Chunks that may hold a member, ascending.</summary>
    private static ushort[] CandidateKeys(Node node, RoaringBitmap live) => node.Kind switch
    {
        Kind.Includes => node.Members!.Keys.ToArray(),
        Kind.Excludes or Kind.Not => live.Keys.ToArray(),
        Kind.And => node.Children.Select(c => CandidateKeys(c, live)).MinBy(k => k.Length)!,
        Kind.Or => node.Children.SelectMany(c => CandidateKeys(c, live)).Distinct().Order().ToArray(),
        _ => [],
    };

    /// <summary>Writes the node's bits for one chunk into buffers[level]; deeper buffers are scratch.</summary>
    private static void EvaluateInto(Node node, ushort key, ulong[][] buffers, int level, RoaringBitmap live)
    {
        var dest = buffers[level].AsSpan();
        switch (node.Kind)
        {
            case Kind.Includes:
                Load(node.Members!.ContainerOf(key), dest);
                break;
            case Kind.Excludes:
                Load(live.ContainerOf(key), dest);
                node.Members!.ContainerOf(key)?.AndNotInto(dest);
                break;
            case Kind.Not:
                EvaluateInto(node.Children[0], key, buffers, level + 1, live);
                Load(live.ContainerOf(key), dest);
                WordOps.AndNot(dest, buffers[level + 1]);
                break;
            case Kind.And:
                EvaluateInto(node.Children[0], key, buffers, level, live);
                for (var i = 1; i < node.Children.Length; i++)
                {
                    var child = node.Children[i];
                    switch (child.Kind)
                    {
                        // Leaves combine straight from their containers, with no scratch pass.
                        case Kind.Includes when child.Members!.ContainerOf(key) is { } members:
                            members.AndInto(dest);
                            break;
                        case Kind.Includes:
                            dest.Clear();
                            break;
                        case Kind.Excludes:
                            AndLive(dest, live, key);
                            child.Members!.ContainerOf(key)?.AndNotInto(dest);
                            break;
                        default:
                            EvaluateInto(child, key, buffers, level + 1, live);
                            WordOps.And(dest, buffers[level + 1]);
                            break;
                    }
                }

                break;
            case Kind.Or:
                EvaluateInto(node.Children[0], key, buffers, level, live);
                for (var i = 1; i < node.Children.Length; i++)
                {
                    var child = node.Children[i];
                    if (child.Kind == Kind.Includes)
                    {
                        child.Members!.ContainerOf(key)?.OrInto(dest);
                    }
                    else
                    {
                        EvaluateInto(child, key, buffers, level + 1, live);
                        WordOps.Or(dest, buffers[level + 1]);
                    }
                }

                break;
        }
    }

    /// <summary>
    /// For an AND (or a lone includes), the array container of its smallest "includes" operand in this chunk when
    /// that is small enough that testing each value beats word-wise passes; otherwise null.
    /// </summary>
    private static ArrayContainer? SparseDriver(Plan plan)
    {
        // Testing one value costs about as much as ~40 word operations (a few container lookups through the tree), so
        // only very sparse chunks take this path.
        const int threshold = 32;
        var root = plan.Root;
        if (root.Kind == Kind.Includes)
        {
            return plan.Containers[root.Leaf] is ArrayContainer { Cardinality: <= threshold } lone ? lone : null;
        }

        if (root.Kind != Kind.And)
        {
            return null;
        }

        ArrayContainer? best = null;
        foreach (var child in root.Children)
        {
            if (child.Kind == Kind.Includes && plan.Containers[child.Leaf] is ArrayContainer array
                && array.Cardinality <= threshold && (best is null || array.Cardinality < best.Cardinality))
            {
                best = array;
            }
        }

        return best;
    }

    /// <summary>Whether one value of the current chunk matches (containers resolved in <paramref name="plan"/>).</summary>
    private static bool Matches(Node node, Plan plan, ushort low)
    {
        switch (node.Kind)
        {
            case Kind.Includes:
                return plan.Containers[node.Leaf]?.Contains(low) == true;
            case Kind.Excludes:
                return plan.LiveContainer?.Contains(low) == true && plan.Containers[node.Leaf]?.Contains(low) != true;
            case Kind.Not:
                return plan.LiveContainer?.Contains(low) == true && !Matches(node.Children[0], plan, low);
            case Kind.And:
                foreach (var child in node.Children)
                {
                    if (!Matches(child, plan, low))
                    {
                        return false;
                    }
                }

                return true;
            default:
                foreach (var child in node.Children)
                {
                    if (Matches(child, plan, low))
                    {
                        return true;
                    }
                }

                return false;
        }
    }

    private static void Load(Container? container, Span<ulong> dest)
    {
        if (container is null)
        {
            dest.Clear();
        }
        else
        {
            container.LoadInto(dest);
        }
    }

    private static void AndLive(Span<ulong> dest, RoaringBitmap live, ushort key)
    {
        if (live.ContainerOf(key) is { } container)
        {
            container.AndInto(dest);
        }
        else
        {
            dest.Clear();
        }
    }
}
