using System.Buffers.Binary;
using System.Collections;

namespace CohortBridge.SegmentService.Bitmaps;

/// <summary>
/// A compressed set of non-negative 32-bit ordinals, roaring-style: the ordinal space is cut into 65,536-value chunks
/// keyed by the high 16 bits; a chunk holds its low 16 bits as a sorted <c>ushort[]</c> while it has at most 4,096
/// values and as a 1,024-word bitset (8 KiB) beyond that, converting in both directions as it fills or empties.
/// </summary>
/// <remarks>
/// <para>AND, OR and AND-NOT return new bitmaps and never change their operands, so a bitmap that is published to
/// readers (a projection's cohort) can be read by any number of threads while a writer prepares a changed copy
/// (<see cref="Clone"/>, then <see cref="Add"/>/<see cref="Remove"/>/<see cref="AddMany"/>, then swap the reference).
/// The in-place methods are not thread-safe.</para>
/// <para>Serialized form (little-endian): <c>uint32 container count</c>, then per container <c>uint16 key</c>,
/// <c>byte type</c> (0 = array, 1 = bitset) and the payload: for an array <c>uint16 count</c> followed by count
/// <c>uint16</c> values ascending; for a bitset 1,024 <c>uint64</c> words.</para>
/// </remarks>
public sealed class RoaringBitmap : IEnumerable<int>
{
    private const int InitialCapacity = 4;
    private const uint FormatMagic = 0x31524243; // "CBR1"

    private ushort[] _keys;
    private Container[] _containers;
    private int _size;

    public RoaringBitmap()
    {
        _keys = new ushort[InitialCapacity];
        _containers = new Container[InitialCapacity];
    }

    private RoaringBitmap(ushort[] keys, Container[] containers, int size)
    {
        _keys = keys;
        _containers = containers;
        _size = size;
    }

    /// <summary>The empty set (a fresh instance: callers may mutate it).</summary>
    public static RoaringBitmap Empty => new();

    /// <summary>Number of ordinals in the set (per-container cardinalities are cached, so this is cheap).</summary>
    public long Cardinality
    {
        get
        {
            long total = 0;
            for (var i = 0; i < _size; i++)
            {
                total += _containers[i].Cardinality;
            }

            return total;
        }
    }

    public bool IsEmpty => _size == 0;

    /// <summary>Number of 65,536-ordinal chunks in use (for diagnostics and memory estimates).</summary>
    public int ContainerCount => _size;

    /// <summary>Approximate heap bytes held by the containers (payload only).</summary>
    public long SizeInBytes
    {
        get
        {
            long bytes = _keys.Length * 2L + _containers.Length * 8L;
            for (var i = 0; i < _size; i++)
            {
                bytes += _containers[i].SizeInBytes;
            }

            return bytes;
        }
    }

    public static RoaringBitmap FromValues(IEnumerable<int> values)
    {
        var bitmap = new RoaringBitmap();
        foreach (var v in values)
        {
            bitmap.Add(v);
        }

        return bitmap;
    }

    /// <summary>Builds from ascending distinct ordinals (the fast path of <see cref="AddMany"/>).</summary>
    public static RoaringBitmap FromSorted(ReadOnlySpan<int> sortedValues)
    {
        var bitmap = new RoaringBitmap();
        bitmap.AddMany(sortedValues);
        return bitmap;
    }

    public bool Contains(int value)
    {
        if (value < 0)
        {
            return false;
        }

        var index = IndexOfKey(HighBits(value));
        return index >= 0 && _containers[index].Contains(LowBits(value));
    }

    /// <summary>Adds one ordinal; returns false when it was already present.</summary>
    public bool Add(int value)
    {
        CheckOrdinal(value);
        var key = HighBits(value);
        var index = IndexOfKey(key);
        if (index >= 0)
        {
            var container = _containers[index];
            var added = container.Add(LowBits(value), out var replacement);
            _containers[index] = replacement ?? container;
            return added;
        }

        var fresh = new ArrayContainer(InitialCapacity);
        fresh.Add(LowBits(value), out _);
        Insert(~index, key, fresh);
        return true;
    }

    /// <summary>Removes one ordinal; returns false when it was absent.</summary>
    public bool Remove(int value)
    {
        if (value < 0)
        {
            return false;
        }

        var index = IndexOfKey(HighBits(value));
        if (index < 0)
        {
            return false;
        }

        var container = _containers[index];
        var removed = container.Remove(LowBits(value), out var replacement);
        container = replacement ?? container;
        if (container.Cardinality == 0)
        {
            RemoveAt(index);
        }
        else
        {
            _containers[index] = container;
        }

        return removed;
    }

    /// <summary>
    /// Adds many ordinals. Ascending input takes the fast path (whole chunks built at once); any other order still
    /// works, one value at a time.
    /// </summary>
    public void AddMany(ReadOnlySpan<int> values)
    {
        var start = 0;
        while (start < values.Length)
        {
            CheckOrdinal(values[start]);
            var key = HighBits(values[start]);
            var end = start + 1;
            var sorted = true;
            while (end < values.Length && values[end] >= 0 && HighBits(values[end]) == key)
            {
                sorted &= values[end] > values[end - 1];
                end++;
            }

            var run = values[start..end];
            var index = IndexOfKey(key);
            if (sorted && index < 0)
            {
                Insert(~index, key, Container.FromSortedLow(run));
            }
            else
            {
                foreach (var v in run)
                {
                    Add(v);
                }
            }

            start = end;
        }
    }

    /// <summary>Removes many ordinals (any order).</summary>
    public void RemoveMany(ReadOnlySpan<int> values)
    {
        foreach (var v in values)
        {
            Remove(v);
        }
    }

    /// <summary>A deep copy that can be changed without affecting this bitmap.</summary>
    public RoaringBitmap Clone()
    {
        var keys = new ushort[Math.Max(_size, InitialCapacity)];
        var containers = new Container[keys.Length];
        Array.Copy(_keys, keys, _size);
        for (var i = 0; i < _size; i++)
        {
            containers[i] = _containers[i].Clone();
        }

        return new RoaringBitmap(keys, containers, _size);
    }

    public static RoaringBitmap And(RoaringBitmap a, RoaringBitmap b)
    {
        var result = new Builder(Math.Min(a._size, b._size));
        int i = 0, j = 0;
        while (i < a._size && j < b._size)
        {
            var ka = a._keys[i];
            var kb = b._keys[j];
            if (ka < kb)
            {
                i = a.AdvanceUntil(kb, i);
            }
            else if (kb < ka)
            {
                j = b.AdvanceUntil(ka, j);
            }
            else
            {
                result.AppendIfNotEmpty(ka, Container.And(a._containers[i], b._containers[j]));
                i++;
                j++;
            }
        }

        return result.Build();
    }

    public static RoaringBitmap Or(RoaringBitmap a, RoaringBitmap b)
    {
        var result = new Builder(a._size + b._size);
        int i = 0, j = 0;
        while (i < a._size && j < b._size)
        {
            var ka = a._keys[i];
            var kb = b._keys[j];
            if (ka < kb)
            {
                result.AppendIfNotEmpty(ka, a._containers[i++].Clone());
            }
            else if (kb < ka)
            {
                result.AppendIfNotEmpty(kb, b._containers[j++].Clone());
            }
            else
            {
                result.AppendIfNotEmpty(ka, Container.Or(a._containers[i++], b._containers[j++]));
            }
        }

        for (; i < a._size; i++)
        {
            result.AppendIfNotEmpty(a._keys[i], a._containers[i].Clone());
        }

        for (; j < b._size; j++)
        {
            result.AppendIfNotEmpty(b._keys[j], b._containers[j].Clone());
        }

        return result.Build();
    }

    /// <summary>The ordinals of <paramref name="a"/> that are not in <paramref name="b"/>.</summary>
    public static RoaringBitmap AndNot(RoaringBitmap a, RoaringBitmap b)
    {
        var result = new Builder(a._size);
        var j = 0;
        for (var i = 0; i < a._size; i++)
        {
            var ka = a._keys[i];
            j = b.AdvanceUntil(ka, j);
            if (j < b._size && b._keys[j] == ka)
            {
                result.AppendIfNotEmpty(ka, Container.AndNot(a._containers[i], b._containers[j]));
            }
            else
            {
                result.AppendIfNotEmpty(ka, a._containers[i].Clone());
            }
        }

        return result.Build();
    }

    /// <summary>|a ∩ b| without building the intersection.</summary>
    public static long AndCardinality(RoaringBitmap a, RoaringBitmap b)
    {
        long total = 0;
        int i = 0, j = 0;
        while (i < a._size && j < b._size)
        {
            var ka = a._keys[i];
            var kb = b._keys[j];
            if (ka < kb)
            {
                i = a.AdvanceUntil(kb, i);
            }
            else if (kb < ka)
            {
                j = b.AdvanceUntil(ka, j);
            }
            else
            {
                total += Container.AndCardinality(a._containers[i++], b._containers[j++]);
            }
        }

        return total;
    }

    public RoaringBitmap And(RoaringBitmap other) => And(this, other);

    public RoaringBitmap Or(RoaringBitmap other) => Or(this, other);

    public RoaringBitmap AndNot(RoaringBitmap other) => AndNot(this, other);

    /// <summary>The ordinals in ascending order.</summary>
    public IEnumerator<int> GetEnumerator()
    {
        for (var i = 0; i < _size; i++)
        {
            var high = _keys[i] << 16;
            foreach (var low in _containers[i].Values())
            {
                yield return high | low;
            }
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>
    /// Copies ordinals in ascending order, starting with the first one &gt;= <paramref name="from"/>, into
    /// <paramref name="buffer"/>; returns how many were written (fewer than the buffer length only at the end).
    /// Lets a streaming reader walk a large set in batches without an iterator per value.
    /// </summary>
    public int CopyTo(int from, Span<int> buffer)
    {
        if (from < 0)
        {
            from = 0;
        }

        var written = 0;
        var index = IndexOfKey(HighBits(from));
        ushort lowFrom = LowBits(from);
        if (index < 0)
        {
            index = ~index;
            lowFrom = 0;
        }

        for (; index < _size && written < buffer.Length; index++)
        {
            written += _containers[index].CopyTo(_keys[index] << 16, lowFrom, buffer[written..]);
            lowFrom = 0;
        }

        return written;
    }

    /// <summary>Writes the compact little-endian form described on the class.</summary>
    public byte[] Serialize()
    {
        var length = 8;
        for (var i = 0; i < _size; i++)
        {
            length += 2 + _containers[i].SerializedPayloadLength;
        }

        var bytes = new byte[length];
        var span = bytes.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(span, FormatMagic);
        BinaryPrimitives.WriteInt32LittleEndian(span[4..], _size);
        var offset = 8;
        for (var i = 0; i < _size; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(span[offset..], _keys[i]);
            offset += 2;
            offset += _containers[i].WritePayload(span[offset..]);
        }

        return bytes;
    }

    /// <summary>Reads the form <see cref="Serialize"/> writes; rejects malformed input with <see cref="FormatException"/>.</summary>
    public static RoaringBitmap Deserialize(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < 8 || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != FormatMagic)
        {
            throw new FormatException("Not a serialized RoaringBitmap.");
        }

        var count = BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]);
        if (count is < 0 or > 65536)
        {
            throw new FormatException("Invalid container count.");
        }

        var result = new Builder(count);
        var offset = 8;
        var previousKey = -1;
        for (var i = 0; i < count; i++)
        {
            if (bytes.Length < offset + 3)
            {
                throw new FormatException("Truncated bitmap.");
            }

            var key = BinaryPrimitives.ReadUInt16LittleEndian(bytes[offset..]);
            if (key <= previousKey)
            {
                throw new FormatException("Container keys must ascend.");
            }

            previousKey = key;
            offset += 2;
            var container = Container.ReadPayload(bytes[offset..], out var consumed);
            offset += consumed;
            result.AppendIfNotEmpty(key, container);
        }

        if (offset != bytes.Length)
        {
            throw new FormatException("Trailing bytes after bitmap.");
        }

        return result.Build();
    }

    /// <summary>Each container's key, kind and cardinality (for tests of the container invariants).</summary>
    internal IEnumerable<(ushort Key, bool IsBitset, int Cardinality)> DescribeContainers()
    {
        for (var i = 0; i < _size; i++)
        {
            yield return (_keys[i], _containers[i] is BitsetContainer, _containers[i].Cardinality);
        }
    }

    public override string ToString() => $"RoaringBitmap(cardinality {Cardinality}, {_size} containers)";

    /// <summary>The keys (high 16 bits) of the chunks in use, ascending.</summary>
    internal ReadOnlySpan<ushort> Keys => _keys.AsSpan(0, _size);

    /// <summary>The container of one chunk, or null when the chunk is empty.</summary>
    internal Container? ContainerOf(ushort key)
    {
        var index = IndexOfKey(key);
        return index >= 0 ? _containers[index] : null;
    }

    internal static ushort HighBits(int value) => (ushort)((uint)value >> 16);

    internal static ushort LowBits(int value) => (ushort)value;

    private static void CheckOrdinal(int value)
    {
        if (value < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "Ordinals are non-negative.");
        }
    }

    private int IndexOfKey(ushort key)
    {
        // Fast path for appends and the common "last chunk" lookups.
        if (_size > 0 && _keys[_size - 1] == key)
        {
            return _size - 1;
        }

        return Array.BinarySearch(_keys, 0, _size, key);
    }

    /// <summary>The first index at or after <paramref name="from"/> whose key is &gt;= <paramref name="key"/>.</summary>
    private int AdvanceUntil(ushort key, int from)
    {
        if (from >= _size || _keys[from] >= key)
        {
            return from;
        }

        var found = Array.BinarySearch(_keys, from, _size - from, key);
        return found >= 0 ? found : ~found;
    }

    private void Insert(int index, ushort key, Container container)
    {
        if (_size == _keys.Length)
        {
            Array.Resize(ref _keys, _size * 2);
            Array.Resize(ref _containers, _size * 2);
        }

        Array.Copy(_keys, index, _keys, index + 1, _size - index);
        Array.Copy(_containers, index, _containers, index + 1, _size - index);
        _keys[index] = key;
        _containers[index] = container;
        _size++;
    }

    private void RemoveAt(int index)
    {
        _size--;
        Array.Copy(_keys, index + 1, _keys, index, _size - index);
        Array.Copy(_containers, index + 1, _containers, index, _size - index);
        _containers[_size] = null!;
    }

    /// <summary>Appends containers in ascending key order; skips empty results.</summary>
    private struct Builder(int capacity)
    {
        private readonly ushort[] _keys = new ushort[Math.Max(capacity, InitialCapacity)];
        private readonly Container[] _containers = new Container[Math.Max(capacity, InitialCapacity)];
        private int _size;

        public void AppendIfNotEmpty(ushort key, Container container)
        {
            if (container.Cardinality > 0)
            {
                _keys[_size] = key;
                _containers[_size++] = container;
            }
        }

        public readonly RoaringBitmap Build() => new(_keys, _containers, _size);
    }
}
