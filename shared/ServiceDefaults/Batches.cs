namespace CohortBridge.ServiceDefaults;

/// <summary>Bounded clean-up statements (retention sweeps), run batch after batch.</summary>
public static class Batches
{
    /// <summary>
    /// Runs <paramref name="batch"/>, which handles at most <paramref name="size"/> rows (each call its own short
    /// transaction), until a call comes up short; returns the rows handled in all.
    /// </summary>
    public static async Task<int> DrainAsync(int size, Func<int, Task<int>> batch)
    {
        var total = 0;
        int handled;
        do
        {
            handled = await batch(size);
            total += handled;
        }
        while (handled == size);
        return total;
    }
}
