namespace CohortBridge.CohortService;

internal static class PeriodicTimerExtensions
{
    /// <summary>Waits for the timer's next tick; false, rather than an exception, once the service is stopping.</summary>
    public static async Task<bool> NextTickAsync(this PeriodicTimer timer, CancellationToken ct)
    {
        try
        {
            return await timer.WaitForNextTickAsync(ct);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
