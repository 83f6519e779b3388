using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;

namespace CohortBridge.SegmentService.Bitmaps;

/// <summary>The low 16 bits of the ordinals of one 65,536-value chunk.</summary>
internal abstract class Container
{
    /// <summary>At most this many values are held as a sorted array; more become a bitset.</summary>
    public const int ArrayMaxSize = 4096;

    public const int BitsetWords = 1024;

    public abstract int Cardinality { get; }

    public abstract long SizeInBytes { get; }

    public abstract int SerializedPayloadLength { get; }

    public abstract bool Contains(ushort value);

    /// <summary>Adds in place; <paramref name="replacement"/> is set when the container had to change kind.</summary>
    public abstract bool Add(ushort value, out Container? replacement);

    /// <summary>Removes in place; <paramref name="replacement"/> is set when the container had to change kind.</summary>
    public abstract bool Remove(ushort value, out Container? replacement);

    public abstract Container Clone();

    public abstract IEnumerable<int> Values();

    /// <summary>Writes values &gt;= <paramref name="lowFrom"/> (ORed with <paramref name="high"/>); returns the count.</summary>
    public abstract int CopyTo(int high, ushort lowFrom, Span<int> destination);

    public abstract int WritePayload(Span<byte> destination);

    /// <summary>Overwrites <paramref name="words"/> (1,024) with this container's bits.</summary>
    public abstract void LoadInto(Span<ulong> words);

    /// <summary><paramref name="words"/> &amp;= this container.</summary>
    public abstract void AndInto(Span<ulong> words);

    /// <summary><paramref name="words"/> |= this container.</summary>
    public abstract void OrInto(Span<ulong> words);

    /// <summary><paramref name="words"/> &amp;= ~this container.</summary>
    public abstract void AndNotInto(Span<ulong> words);

    /// <summary>Builds a container from ordinals of one chunk given in strictly ascending order.</summary>
    public static Container FromSortedLow(ReadOnlySpan<int> sorted)
    {
        if (sorted.Length <= ArrayMaxSize)
        {
            var values = new ushort[Math.Max(sorted.Length, 4)];
            for (var i = 0; i < sorted.Length; i++)
            {
                values[i] = (ushort)sorted[i];
            }

            return new ArrayContainer(values, sorted.Length);
        }

        var words = new ulong[BitsetWords];
        foreach (var v in sorted)
        {
            var low = (ushort)v;
            words[low >> 6] |= 1UL << low;
        }

        return new BitsetContainer(words, sorted.Length);
    }

    public static Container ReadPayload(ReadOnlySpan<byte> bytes, out int consumed)
    {
        if (bytes.Length < 1)
        {
            throw new FormatException("Truncated bitmap.");
        }

        switch (bytes[0])
        {
            case 0:
            {
                if (bytes.Length < 3)
                {
                    throw new FormatException("Truncated bitmap.");
                }

                int count = BinaryPrimitives.ReadUInt16LittleEndian(bytes[1..]);
                if (count == 0 || count > ArrayMaxSize || bytes.Length < 3 + count * 2)
                {
                    throw new FormatException("Invalid array container.");
                }

                var values = new ushort[count];
                var previous = -1;
                for (var i = 0; i < count; i++)
                {
                    values[i] = BinaryPrimitives.ReadUInt16LittleEndian(bytes[(3 + i * 2)..]);
                    if (values[i] <= previous)
                    {
                        throw new FormatException("Array container values must ascend.");
                    }

                    previous = values[i];
                }

                consumed = 3 + count * 2;
                return new ArrayContainer(values, count);
            }

            case 1:
            {
                if (bytes.Length < 1 + BitsetWords * 8)
                {
                    throw new FormatException("Truncated bitmap.");
                }

                var words = new ulong[BitsetWords];
                var payload = bytes.Slice(1, BitsetWords * 8);
                if (BitConverter.IsLittleEndian)
                {
                    payload.CopyTo(MemoryMarshal.AsBytes(words.AsSpan()));
                }
                else
                {
                    for (var i = 0; i < BitsetWords; i++)
                    {
                        words[i] = BinaryPrimitives.ReadUInt64LittleEndian(payload[(i * 8)..]);
                    }
                }

                consumed = 1 + BitsetWords * 8;
                var bitset = new BitsetContainer(words, BitsetContainer.PopCount(words));
                return bitset.Cardinality <= ArrayMaxSize ? bitset.ToArray() : bitset;
            }

            default:
                throw new FormatException("Unknown container type.");
        }
    }

    public static Container And(Container a, Container b) => (a, b) switch
    {
        (BitsetContainer x, BitsetContainer y) => BitsetContainer.And(x, y),
        (ArrayContainer x, ArrayContainer y) => ArrayContainer.And(x, y),
        (ArrayContainer x, BitsetContainer y) => x.Filter(y, keep: true),
        (BitsetContainer x, ArrayContainer y) => y.Filter(x, keep: true),
        _ => throw new InvalidOperationException("Unknown container kind."),
    };

    public static Container Or(Container a, Container b) => (a, b) switch
    {
        (BitsetContainer x, BitsetContainer y) => BitsetContainer.Or(x, y),
        (ArrayContainer x, ArrayContainer y) => ArrayContainer.Or(x, y),
        (ArrayContainer x, BitsetContainer y) => y.WithValues(x),
        (BitsetContainer x, ArrayContainer y) => x.WithValues(y),
        _ => throw new InvalidOperationException("Unknown container kind."),
    };

    public static Container AndNot(Container a, Container b) => (a, b) switch
    {
        (BitsetContainer x, BitsetContainer y) => BitsetContainer.AndNot(x, y),
        (ArrayContainer x, ArrayContainer y) => ArrayContainer.AndNot(x, y),
        (ArrayContainer x, BitsetContainer y) => x.Filter(y, keep: false),
        (BitsetContainer x, ArrayContainer y) => x.WithoutValues(y),
        _ => throw new InvalidOperationException("Unknown container kind."),
    };

    public static int AndCardinality(Container a, Container b) => (a, b) switch
    {
        (BitsetContainer x, BitsetContainer y) => BitsetContainer.AndCardinality(x, y),
        (ArrayContainer x, BitsetContainer y) => x.CountIn(y),
        (BitsetContainer x, ArrayContainer y) => y.CountIn(x),
        _ => And(a, b).Cardinality,
    };
}

/// <summary>Up to 4,096 values as a sorted <c>ushort[]</c>.</summary>
internal sealed class ArrayContainer : Container
{
    private ushort[] _values;
    private int _count;

    public ArrayContainer(int capacity) => _values = new ushort[capacity];

    public ArrayContainer(ushort[] values, int count)
    {
        _values = values;
        _count = count;
    }

    public override int Cardinality => _count;

    public override long SizeInBytes => 24 + _values.Length * 2L;

    public override int SerializedPayloadLength => 3 + _count * 2;

    internal ReadOnlySpan<ushort> Span => _values.AsSpan(0, _count);

    public override bool Contains(ushort value) => Span.BinarySearch(value) >= 0;

    public override bool Add(ushort value, out Container? replacement)
    {
        replacement = null;
        var index = _count > 0 && _values[_count - 1] < value ? ~_count : Span.BinarySearch(value);
        if (index >= 0)
        {
            return false;
        }

        if (_count == ArrayMaxSize)
        {
            var bitset = ToBitset();
            bitset.Add(value, out _);
            replacement = bitset;
            return true;
        }

        index = ~index;
        if (_count == _values.Length)
        {
            Array.Resize(ref _values, Math.Min(Math.Max(_count * 2, 4), ArrayMaxSize));
        }

        Array.Copy(_values, index, _values, index + 1, _count - index);
        _values[index] = value;
        _count++;
        return true;
    }

    public override bool Remove(ushort value, out Container? replacement)
    {
        replacement = null;
        var index = Span.BinarySearch(value);
        if (index < 0)
        {
            return false;
        }

        Array.Copy(_values, index + 1, _values, index, _count - index - 1);
        _count--;
        return true;
    }

    public override Container Clone() => new ArrayContainer(_values.AsSpan(0, Math.Max(_count, 1)).ToArray(), _count);

    public override IEnumerable<int> Values()
    {
        for (var i = 0; i < _count; i++)
        {
            yield return _values[i];
        }
    }

    public override int CopyTo(int high, ushort lowFrom, Span<int> destination)
    {
        var start = lowFrom == 0 ? 0 : Span.BinarySearch(lowFrom);
        if (start < 0)
        {
            start = ~start;
        }

        var n = Math.Min(_count - start, destination.Length);
        for (var i = 0; i < n; i++)
        {
            destination[i] = high | _values[start + i];
        }

        return n;
    }

    public override int WritePayload(Span<byte> destination)
    {
        destination[0] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[1..], (ushort)_count);
        for (var i = 0; i < _count; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(destination[(3 + i * 2)..], _values[i]);
        }

        return 3 + _count * 2;
    }

    public override void LoadInto(Span<ulong> words)
    {
        words.Clear();
        OrInto(words);
    }

    public override void AndInto(Span<ulong> words)
    {
        // Keep only our values that are set: collect them, clear, set them back (cost follows the array, not 1,024 words).
        Span<ushort> kept = _count <= 512 ? stackalloc ushort[_count] : new ushort[_count];
        var n = 0;
        foreach (var v in Span)
        {
            if ((words[v >> 6] & (1UL << v)) != 0)
            {
                kept[n++] = v;
            }
        }

        words.Clear();
        foreach (var v in kept[..n])
        {
            words[v >> 6] |= 1UL << v;
        }
    }

    public override void OrInto(Span<ulong> words)
    {
        foreach (var v in Span)
        {
            words[v >> 6] |= 1UL << v;
        }
    }

    public override void AndNotInto(Span<ulong> words)
    {
        foreach (var v in Span)
        {
            words[v >> 6] &= ~(1UL << v);
        }
    }

    public BitsetContainer ToBitset()
    {
        var words = new ulong[BitsetWords];
        foreach (var v in Span)
        {
            words[v >> 6] |= 1UL << v;
        }

        return new BitsetContainer(words, _count);
    }

    /// <summary>The values that are (keep) or are not (!keep) in <paramref name="bitset"/>.</summary>
    public ArrayContainer Filter(BitsetContainer bitset, bool keep)
    {
        var result = new ushort[Math.Max(_count, 1)];
        var n = 0;
        foreach (var v in Span)
        {
            if (bitset.Contains(v) == keep)
            {
                result[n++] = v;
            }
        }

        return new ArrayContainer(result, n);
    }

    public int CountIn(BitsetContainer bitset)
    {
        var n = 0;
        foreach (var v in Span)
        {
            if (bitset.Contains(v))
            {
                n++;
            }
        }

        return n;
    }

    public static ArrayContainer And(ArrayContainer a, ArrayContainer b)
    {
        // Gallop through the larger side when sizes differ a lot; otherwise a plain merge.
        var (small, large) = a._count <= b._count ? (a, b) : (b, a);
        var result = new ushort[Math.Max(small._count, 1)];
        var n = 0;
        if (small._count * 32 < large._count)
        {
            var from = 0;
            foreach (var v in small.Span)
            {
                var found = large.Span[from..].BinarySearch(v);
                if (found >= 0)
                {
                    result[n++] = v;
                    from += found + 1;
                }
                else
                {
                    from += ~found;
                }

                if (from >= large._count)
                {
                    break;
                }
            }

            return new ArrayContainer(result, n);
        }

        int i = 0, j = 0;
        var x = a.Span;
        var y = b.Span;
        while (i < x.Length && j < y.Length)
        {
            if (x[i] < y[j])
            {
                i++;
            }
            else if (x[i] > y[j])
            {
                j++;
            }
            else
            {
                result[n++] = x[i];
                i++;
                j++;
            }
        }

        return new ArrayContainer(result, n);
    }

    public static Container Or(ArrayContainer a, ArrayContainer b)
    {
        if (a._count + b._count > ArrayMaxSize)
        {
            // Overlapping arrays may still fit an array once merged.
            var bitset = a.ToBitset().WithValuesInPlace(b);
            return bitset.Cardinality <= ArrayMaxSize ? bitset.ToArray() : bitset;
        }

        var result = new ushort[Math.Max(a._count + b._count, 1)];
        int i = 0, j = 0, n = 0;
        var x = a.Span;
        var y = b.Span;
        while (i < x.Length && j < y.Length)
        {
            if (x[i] < y[j])
            {
                result[n++] = x[i++];
            }
            else if (x[i] > y[j])
            {
                result[n++] = y[j++];
            }
            else
            {
                result[n++] = x[i];
                i++;
                j++;
            }
        }

        while (i < x.Length)
        {
            result[n++] = x[i++];
        }

        while (j < y.Length)
        {
            result[n++] = y[j++];
        }

        return new ArrayContainer(result, n);
    }

    public static ArrayContainer AndNot(ArrayContainer a, ArrayContainer b)
    {
        var result = new ushort[Math.Max(a._count, 1)];
        int i = 0, j = 0, n = 0;
        var x = a.Span;
        var y = b.Span;
        while (i < x.Length)
        {
            while (j < y.Length && y[j] < x[i])
            {
                j++;
            }

            if (j >= y.Length || y[j] != x[i])
            {
                result[n++] = x[i];
            }

            i++;
        }

        return new ArrayContainer(result, n);
    }
}

/// <summary>More than 4,096 values as a 65,536-bit set (1,024 words), with its cardinality cached.</summary>
internal sealed class BitsetContainer : Container
{
    private readonly ulong[] _words;
    private int _cardinality;

    public BitsetContainer(ulong[] words, int cardinality)
    {
        _words = words;
        _cardinality = cardinality;
    }

    public override int Cardinality => _cardinality;

    public override long SizeInBytes => 24 + BitsetWords * 8L;

    public override int SerializedPayloadLength => 1 + BitsetWords * 8;

    public override bool Contains(ushort value) => (_words[value >> 6] & (1UL << value)) != 0;

    public override bool Add(ushort value, out Container? replacement)
    {
        replacement = null;
        ref var word = ref _words[value >> 6];
        var bit = 1UL << value;
        if ((word & bit) != 0)
        {
            return false;
        }

        word |= bit;
        _cardinality++;
        return true;
    }

    public override bool Remove(ushort value, out Container? replacement)
    {
        replacement = null;
        ref var word = ref _words[value >> 6];
        var bit = 1UL << value;
        if ((word & bit) == 0)
        {
            return false;
        }

        word &= ~bit;
        _cardinality--;
        if (_cardinality <= ArrayMaxSize)
        {
            replacement = ToArray();
        }

        return true;
    }

    public override Container Clone() => new BitsetContainer((ulong[])_words.Clone(), _cardinality);

    public override IEnumerable<int> Values()
    {
        for (var i = 0; i < BitsetWords; i++)
        {
            var word = _words[i];
            while (word != 0)
            {
                yield return (i << 6) | BitOperations.TrailingZeroCount(word);
                word &= word - 1;
            }
        }
    }

    public override int CopyTo(int high, ushort lowFrom, Span<int> destination)
    {
        var n = 0;
        var wordIndex = lowFrom >> 6;
        var word = _words[wordIndex] & (ulong.MaxValue << lowFrom);
        while (true)
        {
            while (word != 0)
            {
                if (n == destination.Length)
                {
                    return n;
                }

                destination[n++] = high | (wordIndex << 6) | BitOperations.TrailingZeroCount(word);
                word &= word - 1;
            }

            if (++wordIndex == BitsetWords)
            {
                return n;
            }

            word = _words[wordIndex];
        }
    }

    public override int WritePayload(Span<byte> destination)
    {
        destination[0] = 1;
        var payload = destination.Slice(1, BitsetWords * 8);
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.AsBytes(_words.AsSpan()).CopyTo(payload);
        }
        else
        {
            for (var i = 0; i < BitsetWords; i++)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(payload[(i * 8)..], _words[i]);
            }
        }

        return 1 + BitsetWords * 8;
    }

    public override void LoadInto(Span<ulong> words) => _words.CopyTo(words);

    public override void AndInto(Span<ulong> words) => WordOps.And(words, _words);

    public override void OrInto(Span<ulong> words) => WordOps.Or(words, _words);

    public override void AndNotInto(Span<ulong> words) => WordOps.AndNot(words, _words);

    public ArrayContainer ToArray()
    {
        var values = new ushort[Math.Max(_cardinality, 1)];
        var n = 0;
        for (var i = 0; i < BitsetWords; i++)
        {
            var word = _words[i];
            while (word != 0)
            {
                values[n++] = (ushort)((i << 6) | BitOperations.TrailingZeroCount(word));
                word &= word - 1;
            }
        }

        return new ArrayContainer(values, n);
    }

    public static int PopCount(ReadOnlySpan<ulong> words)
    {
        var total = 0;
        foreach (var w in words)
        {
            total += BitOperations.PopCount(w);
        }

        return total;
    }

    public static Container And(BitsetContainer a, BitsetContainer b)
    {
        var words = new ulong[BitsetWords];
        var x = MemoryMarshal.Cast<ulong, Vector<ulong>>(a._words);
        var y = MemoryMarshal.Cast<ulong, Vector<ulong>>(b._words);
        var r = MemoryMarshal.Cast<ulong, Vector<ulong>>(words.AsSpan());
        for (var i = 0; i < r.Length; i++)
        {
            r[i] = x[i] & y[i];
        }

        return Normalize(words);
    }

    public static Container Or(BitsetContainer a, BitsetContainer b)
    {
        var words = new ulong[BitsetWords];
        var x = MemoryMarshal.Cast<ulong, Vector<ulong>>(a._words);
        var y = MemoryMarshal.Cast<ulong, Vector<ulong>>(b._words);
        var r = MemoryMarshal.Cast<ulong, Vector<ulong>>(words.AsSpan());
        for (var i = 0; i < r.Length; i++)
        {
            r[i] = x[i] | y[i];
        }

        // A union of two sets of more than 4,096 values always has more than 4,096: it stays a bitset.
        return new BitsetContainer(words, PopCount(words));
    }

    public static Container AndNot(BitsetContainer a, BitsetContainer b)
    {
        var words = new ulong[BitsetWords];
        var x = MemoryMarshal.Cast<ulong, Vector<ulong>>(a._words);
        var y = MemoryMarshal.Cast<ulong, Vector<ulong>>(b._words);
        var r = MemoryMarshal.Cast<ulong, Vector<ulong>>(words.AsSpan());
        for (var i = 0; i < r.Length; i++)
        {
            r[i] = Vector.AndNot(x[i], y[i]);
        }

        return Normalize(words);
    }

    public static int AndCardinality(BitsetContainer a, BitsetContainer b)
    {
        var total = 0;
        for (var i = 0; i < BitsetWords; i++)
        {
            total += BitOperations.PopCount(a._words[i] & b._words[i]);
        }

        return total;
    }

    /// <summary>A copy of this bitset with the array's values set.</summary>
    public BitsetContainer WithValues(ArrayContainer values) =>
        ((BitsetContainer)Clone()).WithValuesInPlace(values);

    public BitsetContainer WithValuesInPlace(ArrayContainer values)
    {
        foreach (var v in values.Span)
        {
            ref var word = ref _words[v >> 6];
            var bit = 1UL << v;
            if ((word & bit) == 0)
            {
                word |= bit;
                _cardinality++;
            }
        }

        return this;
    }

    /// <summary>A copy of this bitset with the array's values cleared (an array when few remain).</summary>
    public Container WithoutValues(ArrayContainer values)
    {
        var words = (ulong[])_words.Clone();
        var cardinality = _cardinality;
        foreach (var v in values.Span)
        {
            ref var word = ref words[v >> 6];
            var bit = 1UL << v;
            if ((word & bit) != 0)
            {
                word &= ~bit;
                cardinality--;
            }
        }

        var result = new BitsetContainer(words, cardinality);
        return cardinality <= ArrayMaxSize ? result.ToArray() : result;
    }

    private static Container Normalize(ulong[] words)
    {
        var result = new BitsetContainer(words, PopCount(words));
        return result.Cardinality <= ArrayMaxSize ? result.ToArray() : result;
    }
}

/// <summary>Vectorised in-place operations on 1,024-word chunks.</summary>
internal static class WordOps
{
    public static void And(Span<ulong> target, ReadOnlySpan<ulong> other)
    {
        var t = MemoryMarshal.Cast<ulong, Vector<ulong>>(target);
        var o = MemoryMarshal.Cast<ulong, Vector<ulong>>(other);
        for (var i = 0; i < t.Length; i++)
        {
            t[i] &= o[i];
        }
    }

    public static void Or(Span<ulong> target, ReadOnlySpan<ulong> other)
    {
        var t = MemoryMarshal.Cast<ulong, Vector<ulong>>(target);
        var o = MemoryMarshal.Cast<ulong, Vector<ulong>>(other);
        for (var i = 0; i < t.Length; i++)
        {
            t[i] |= o[i];
        }
    }

    public static void AndNot(Span<ulong> target, ReadOnlySpan<ulong> other)
    {
        var t = MemoryMarshal.Cast<ulong, Vector<ulong>>(target);
        var o = MemoryMarshal.Cast<ulong, Vector<ulong>>(other);
        for (var i = 0; i < t.Length; i++)
        {
            t[i] = Vector.AndNot(t[i], o[i]);
        }
    }

    public static int PopCount(ReadOnlySpan<ulong> words)
    {
        var total = 0;
        foreach (var w in words)
        {
            total += BitOperations.PopCount(w);
        }

        return total;
    }
}
