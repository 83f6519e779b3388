using CohortBridge.Contracts;
using CohortBridge.ImportGateway.Imports;
using MassTransit;

namespace CohortBridge.ImportGateway.Snapshots;

/// <summary>
/// Publishes the chunks of one snapshot in sequence order with up to <c>maxInFlight</c> publishes awaiting their
/// broker confirm at once (each through <see cref="ImportPublisher"/>: confirm, retries, timeout). The last chunk is
/// published only once every earlier chunk is confirmed, and is itself awaited: when <see cref="PublishLastAsync"/>
/// returns, the whole snapshot is durably on the bus.
/// </summary>
public sealed class SnapshotChunkPublisher(ImportPublisher publisher, int maxInFlight)
{
    private readonly SemaphoreSlim _slots = new(Math.Max(1, maxInFlight));
    private readonly List<Task> _pending = [];

    /// <summary>Chunks handed to the bus so far (the next sequence number).</summary>
    public int Published { get; private set; }

    /// <summary>Starts publishing a chunk; waits only for a free slot. Throws the failure of an earlier publish.</summary>
    public async Task PublishAsync(CohortExportReceived message, CancellationToken ct)
    {
        ThrowIfFailed();
        await _slots.WaitAsync(ct);
        ThrowIfFailed();
        Published++;
        _pending.Add(PublishOneAsync(message, ct));
        _pending.RemoveAll(t => t.IsCompletedSuccessfully);
    }

    /// <summary>Waits for the confirm of every chunk handed over so far; throws the failure of one that was not confirmed.</summary>
    public async Task ConfirmAllAsync()
    {
        await Task.WhenAll(_pending);
        _pending.Clear();
    }

    /// <summary>Waits for every earlier chunk's confirm, then publishes the last chunk and waits for its confirm.</summary>
    public async Task PublishLastAsync(CohortExportReceived message, CancellationToken ct)
    {
        await ConfirmAllAsync();
        Published++;
        await publisher.PublishAsync(message, ct, NewId.NextGuid());
    }

    /// <summary>Waits for publishes in flight, ignoring their outcome (used before publishing an abort marker).</summary>
    public async Task SettleAsync()
    {
        try
        {
            await Task.WhenAll(_pending);
        }
        catch (Exception ex) when (ex is BusUnavailableException or OperationCanceledException)
        {
            // Already reported through the publish that failed.
        }
    }

    private async Task PublishOneAsync(CohortExportReceived message, CancellationToken ct)
    {
        try
        {
            await publisher.PublishAsync(message, ct, NewId.NextGuid());
        }
        finally
        {
            _slots.Release();
        }
    }

    private void ThrowIfFailed()
    {
        foreach (var task in _pending)
        {
            if (task.IsFaulted || task.IsCanceled)
            {
                task.GetAwaiter().GetResult();
            }
        }
    }
}
