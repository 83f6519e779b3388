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
        Received++;
        if (outcome.Matched)
        {
            Matched++;
            return;
        }

        var reason = outcome.Reason ?? UnmatchedReason.InvalidIdentifier;
        Unmatched[reason] = Unmatched.GetValueOrDefault(reason) + 1;
        if (UnmatchedSample.Count < SampleSize)
        {
            UnmatchedSample.Add(outcome.Display.Length > SampleValueLength ? outcome.Display[..SampleValueLength] + "…" : outcome.Display);
        }
    }
}
