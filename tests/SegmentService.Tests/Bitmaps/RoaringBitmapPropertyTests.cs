using CohortBridge.SegmentService.Bitmaps;
using CsCheck;

namespace CohortBridge.SegmentService.Tests.Bitmaps;

/// <summary>Every bitmap operation against a <see cref="HashSet{T}"/> model, over sets that exercise every container kind.</summary>
public sealed class RoaringBitmapPropertyTests
{
    private const long Iterations = 150;

    /// <summary>
    /// Sets that are sparse across many chunks, dense inside a few chunks (bitsets), or hover around the 4,096-value
    /// array/bitset threshold inside one chunk, plus values near the top of the ordinal range.
    /// </summary>
    private static readonly Gen<int[]> Values = Gen.Frequency(
        (2, Gen.Int[0, 1 << 22].Array[0, 1500]),
        (2, Gen.Int[0, 2 * 65536 - 1].Array[0, 16000]),
        (2, Gen.Int[65536, 65536 + 9000].Array[3900, 4300]),
        (1, Gen.Int[int.MaxValue - 70000, int.MaxValue].Array[0, 6000]),
        (1, Gen.Int[0, 100].Array[0, 50]));

    private static readonly Gen<(int[], int[])> Pairs = Gen.Select(Values, Values);

    [Fact]
    public void Add_RandomValues_MatchesHashSet()
    {
        Values.Sample(values =>
        {
            var model = new HashSet<int>();
            var bitmap = new RoaringBitmap();
            foreach (var v in values)
            {
                Assert.Equal(model.Add(v), bitmap.Add(v));
            }

            AssertSame(model, bitmap);
            foreach (var v in values.Take(50))
            {
                Assert.True(bitmap.Contains(v));
                Assert.Equal(model.Contains(v + 1), bitmap.Contains(v + 1));
            }
        }, iter: Iterations);
    }

    [Fact]
    public void AddMany_SortedOrUnsorted_MatchesHashSet()
    {
        Pairs.Sample((initial, added) =>
        {
            var bitmap = RoaringBitmap.FromValues(initial);
            var sorted = added.Distinct().Order().ToArray();
            bitmap.AddMany(sorted);
            bitmap.AddMany(added);
            AssertSame(initial.Concat(added).ToHashSet(), bitmap);
            AssertSame(sorted.ToHashSet(), RoaringBitmap.FromSorted(sorted));
        }, iter: Iterations);
    }

    [Fact]
    public void Remove_SubsetOfValues_MatchesHashSetAndConvertsContainers()
    {
        Pairs.Sample((values, others) =>
        {
            var model = values.ToHashSet();
            var bitmap = RoaringBitmap.FromValues(values);
            var toRemove = values.Where((_, i) => i % 3 != 0).Concat(others.Take(100)).ToArray();
            foreach (var v in toRemove)
            {
                Assert.Equal(model.Remove(v), bitmap.Remove(v));
            }

            AssertSame(model, bitmap);
        }, iter: Iterations);
    }

    [Fact]
    public void And_TwoSets_MatchesIntersection()
    {
        Pairs.Sample((a, b) =>
        {
            var (x, y) = (RoaringBitmap.FromValues(a), RoaringBitmap.FromValues(b));
            var expected = a.ToHashSet();
            expected.IntersectWith(b);
            AssertSame(expected, RoaringBitmap.And(x, y));
            Assert.Equal(expected.Count, RoaringBitmap.AndCardinality(x, y));
            AssertSame(a.ToHashSet(), x);
            AssertSame(b.ToHashSet(), y);
        }, iter: Iterations);
    }

    [Fact]
    public void Or_TwoSets_MatchesUnion()
    {
        Pairs.Sample((a, b) =>
        {
            var (x, y) = (RoaringBitmap.FromValues(a), RoaringBitmap.FromValues(b));
            var expected = a.ToHashSet();
            expected.UnionWith(b);
            AssertSame(expected, RoaringBitmap.Or(x, y));
            AssertSame(a.ToHashSet(), x);
        }, iter: Iterations);
    }

    [Fact]
    public void AndNot_TwoSets_MatchesDifference()
    {
        Pairs.Sample((a, b) =>
        {
            var (x, y) = (RoaringBitmap.FromValues(a), RoaringBitmap.FromValues(b));
            var expected = a.ToHashSet();
            expected.ExceptWith(b);
            AssertSame(expected, RoaringBitmap.AndNot(x, y));
            AssertSame(a.ToHashSet(), x);
            AssertSame(b.ToHashSet(), y);
        }, iter: Iterations);
    }

    [Fact]
    public void AndNot_SubsetOfDenseSet_ConvertsBitsetBackToArray()
    {
        Gen.Int[4097, 20000].Sample(n =>
        {
            var all = RoaringBitmap.FromSorted(Enumerable.Range(0, n).ToArray());
            var most = RoaringBitmap.FromSorted(Enumerable.Range(0, n - 10).ToArray());
            AssertSame(Enumerable.Range(n - 10, 10).ToHashSet(), RoaringBitmap.AndNot(all, most));
        }, iter: 30);
    }

    [Fact]
    public void Serialize_Roundtrip_PreservesSet()
    {
        Values.Sample(values =>
        {
            var bitmap = RoaringBitmap.FromValues(values);
            var copy = RoaringBitmap.Deserialize(bitmap.Serialize());
            AssertSame(values.ToHashSet(), copy);
            Assert.Equal(bitmap.Serialize(), copy.Serialize());
        }, iter: Iterations);
    }

    [Fact]
    public void CopyTo_FromAnyOrdinal_ReturnsTheFollowingValuesInOrder()
    {
        Gen.Select(Values, Gen.Int[0, 1 << 22], Gen.Int[1, 5000]).Sample((values, from, size) =>
        {
            var bitmap = RoaringBitmap.FromValues(values);
            var buffer = new int[size];
            var n = bitmap.CopyTo(from, buffer);
            var expected = values.Distinct().Where(v => v >= from).Order().Take(size).ToArray();
            Assert.Equal(expected, buffer[..n]);
        }, iter: Iterations);
    }

    [Fact]
    public void Clone_ThenChange_LeavesOriginalIntact()
    {
        Pairs.Sample((a, b) =>
        {
            var original = RoaringBitmap.FromValues(a);
            var clone = original.Clone();
            clone.AddMany(b);
            clone.RemoveMany(a.Take(a.Length / 2).ToArray());
            AssertSame(a.ToHashSet(), original);
        }, iter: Iterations);
    }

    [Fact]
    public void Add_4097thValueInOneChunk_TurnsArrayIntoBitsetAndBack()
    {
        var bitmap = new RoaringBitmap();
        for (var i = 0; i < Container.ArrayMaxSize; i++)
        {
            bitmap.Add(70_000 + i * 3);
        }

        Assert.False(Assert.Single(bitmap.DescribeContainers()).IsBitset);
        bitmap.Add(1);
        Assert.Equal(2, bitmap.ContainerCount);
        bitmap.Add(70_001);
        Assert.True(bitmap.DescribeContainers().Last().IsBitset);
        Assert.Equal(Container.ArrayMaxSize + 2, bitmap.Cardinality);
        bitmap.Remove(70_000);
        Assert.False(bitmap.DescribeContainers().Last().IsBitset);
        Assert.Equal(Container.ArrayMaxSize + 1, bitmap.Cardinality);
    }

    [Fact]
    public void Deserialize_GarbageInput_ThrowsFormatException()
    {
        Gen.Byte.Array[0, 64].Sample(bytes =>
        {
            var withMagic = new byte[] { 0x43, 0x42, 0x52, 0x31 }.Concat(bytes).ToArray();
            try
            {
                RoaringBitmap.Deserialize(withMagic);
            }
            catch (FormatException)
            {
            }
        }, iter: 300);
        Assert.Throws<FormatException>(() => RoaringBitmap.Deserialize([1, 2, 3]));
    }

    [Fact]
    public void Add_NegativeOrdinal_Throws()
    {
        var bitmap = new RoaringBitmap();
        Assert.Throws<ArgumentOutOfRangeException>(() => bitmap.Add(-1));
        Assert.False(bitmap.Contains(-1));
        Assert.False(bitmap.Remove(-1));
    }

    /// <summary>Same members in the same order, and the container invariants hold.</summary>
    internal static void AssertSame(HashSet<int> model, RoaringBitmap bitmap)
    {
        Assert.Equal(model.Count, bitmap.Cardinality);
        Assert.Equal(model.Order().ToArray(), bitmap.ToArray());
        var previousKey = -1;
        foreach (var (key, isBitset, cardinality) in bitmap.DescribeContainers())
        {
            Assert.True(key > previousKey, "container keys ascend");
            Assert.True(cardinality > 0, "no empty container");
            Assert.Equal(cardinality > Container.ArrayMaxSize, isBitset);
            previousKey = key;
        }
    }
}
