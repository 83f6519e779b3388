using System.Numerics;

namespace CohortBridge.CohortService.Snapshots;

/// <summary>
/// A set of user ordinals as one bit per ordinal. Ordinals are dense per workspace, so a snapshot of every user of a
/// 10M-user workspace takes 1.25 MB, duplicates cost nothing and the ordinals come out sorted (the membership index's
/// order) without a sort.
/// </summary>
public sealed class OrdinalSet
{
    private ulong[] _words = new ulong[1024];

    public void Add(int ordinal)
    {
        var word = ordinal >> 6;
        if (word >= _words.Length)
        {
            Array.Resize(ref _words, Math.Max(_words.Length * 2, word + 1));
        }

        _words[word] |= 1UL << (ordinal & 63);
    }

    /// <summary>The ordinals of this set that <paramref name="other"/> lacks, ascending.</summary>
    public int[] Except(OrdinalSet other)
    {
        var count = 0;
        for (var word = 0; word < _words.Length; word++)
        {
            count += BitOperations.PopCount(_words[word] & ~other.WordAt(word));
        }

        var result = new int[count];
        var next = 0;
        for (var word = 0; word < _words.Length; word++)
        {
            for (var rest = _words[word] & ~other.WordAt(word); rest != 0; rest &= rest - 1)
            {
                result[next++] = (word << 6) + BitOperations.TrailingZeroCount(rest);
            }
        }

        return result;
    }

    private ulong WordAt(int word) => word < _words.Length ? _words[word] : 0;
}
