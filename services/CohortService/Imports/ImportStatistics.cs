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
            if (outcome.Matched)
            {
                CountMatched();
            }
            else
            {
                CountUnmatched(outcome.Reason ?? UnmatchedReason.InvalidIdentifier, outcome.Display);
            }
        }
    }

    public void CountMatched()
    {
        Received++;
        Matched++;
    }

    public void CountUnmatched(string reason, string display)
    {
        Received++;
        Unmatched[reason] = Unmatched.GetValueOrDefault(reason) + 1;
        if (UnmatchedSample.Count < SampleSize)
        {
            UnmatchedSample.Add(display.Length > SampleValueLength ? display[..SampleValueLength] + "…" : display);
        }
    }
}
