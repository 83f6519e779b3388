using CohortBridge.CohortService.Matching;

namespace CohortBridge.CohortService.Imports;

/// <summary>Counts of one import: every identifier occurrence is received and lands in exactly one bucket.</summary>
public sealed class ImportStatistics
{
    public const int SampleSize = 20;
    private const int SampleValueLength = 128;

    public long Received { get; private set; }
    public long Matched { get; private set; }
    public long Added { get; set; }
    public long Removed { get; set; }
    public SortedDictionary<string, long> Unmatched { get; } = new(StringComparer.Ordinal);
    public List<string> UnmatchedSample { get; } = [];

    public void Count(IReadOnlyList<IdentifierOutcome> outcomes)
    {
        foreach (var outcome in outcomes)
        {
            Count(outcome);
        }
    }

    public void Count(in IdentifierOutcome outcome)
    {
        if (outcome.Matched)
        {
            CountMatched(1);
        }
        else
        {
            CountUnmatched(outcome.Reason ?? UnmatchedReason.InvalidIdentifier, outcome.Display, 1);
        }
    }

    public void CountMatched(long occurrences)
    {
        Received += occurrences;
        Matched += occurrences;
    }

    /// <summary>Counts the occurrences of one unmatched identifier, which the sample takes once.</summary>
    public void CountUnmatched(string reason, string display, long occurrences)
    {
        Received += occurrences;
        Unmatched[reason] = Unmatched.GetValueOrDefault(reason) + occurrences;
        if (UnmatchedSample.Count < SampleSize)
        {
            UnmatchedSample.Add(display.Length > SampleValueLength ? display[..SampleValueLength] + "…" : display);
        }
    }
}
