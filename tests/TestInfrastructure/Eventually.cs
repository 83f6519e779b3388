namespace CohortBridge.Testing;

/// <summary>Polls until a condition holds (eventual consistency), never a fixed sleep.</summary>
public static class Eventually
{
    public static async Task<T> UntilAsync<T>(
        Func<Task<T>> probe, Func<T, bool> done, TimeSpan? timeout = null, string? because = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(20));
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            var value = await probe();
            if (done(value))
            {
                return value;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Condition not met within {timeout ?? TimeSpan.FromSeconds(20)}: {because}. Last value: {value}");
            }

            await Task.Delay(delay);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 1.5, 250));
        }
    }

    public static Task UntilAsync(Func<Task<bool>> condition, TimeSpan? timeout = null, string? because = null) =>
        UntilAsync(condition, ok => ok, timeout, because);
}
