namespace CohortBridge.CohortService.Imports;

/// <summary>
/// The net membership change of one import whose change sets apply in order: a user added then removed within the
/// same import is neither added nor removed.
/// </summary>
public sealed class NetChange
{
    private readonly HashSet<int> _added = [];
    private readonly HashSet<int> _removed = [];

    public void Added(IEnumerable<int> ordinals)
    {
        foreach (var o in ordinals)
        {
            if (!_removed.Remove(o))
            {
                _added.Add(o);
            }
        }
    }

    public void Removed(IEnumerable<int> ordinals)
    {
        foreach (var o in ordinals)
        {
            if (!_added.Remove(o))
            {
                _removed.Add(o);
            }
        }
    }

    public int[] AddedOrdinals => [.. _added];

    public int[] RemovedOrdinals => [.. _removed];
}
