using System.Runtime.CompilerServices;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Group commit of one cohort's queued change sets. Every cohort message (not snapshot chunks) is queued here in
/// delivery order as soon as it enters the consume pipeline (<see cref="Consumers.CohortBatchFilter"/>, placed before the
/// cohort partitioner). The consumer that holds the cohort's partition applies everything queued for that cohort
/// (up to <see cref="CohortsOptions.ImportBatchSize"/>) in one transaction through
/// <see cref="ImportProcessor.ProcessBatchAsync"/>, in queue order; the messages still waiting in the partition then
/// find their outcome ready and only publish it. If the batch transaction fails, its imports are applied one by one
/// (each failure stays with its own message, which MassTransit retries as before).
/// </summary>
public sealed partial class ImportBatcher(ImportProcessor processor, IOptions<CohortsOptions> options, ILogger<ImportBatcher> logger)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, CohortQueue> _queues = new(StringComparer.Ordinal);
    private readonly ConditionalWeakTable<CohortExportReceived, Entry> _entries = new();

    /// <summary>Queues a delivered message (synchronously, so queue order is delivery order).</summary>
    public void Enqueue(CohortExportReceived message)
    {
        var key = $"{message.WorkspaceId}\n{message.Partner}\n{message.CohortId}";
        lock (_gate)
        {
            if (!_queues.TryGetValue(key, out var queue))
            {
                queue = new CohortQueue(key);
                _queues.Add(key, queue);
            }

            var entry = new Entry(message, queue);
            queue.Pending.Enqueue(entry);

            // A retry queues the same message instance again: its consumer waits for the newest entry.
            _entries.AddOrUpdate(message, entry);
        }
    }

    /// <summary>
    /// The outcome of a queued message: applies the cohort's queue (this message included) unless another consumer
    /// is doing so. Returns false when the message was never queued (the caller then processes it alone).
    /// </summary>
    public bool TryProcess(CohortExportReceived message, CancellationToken ct, out Task<CohortUpdated?> outcome)
    {
        if (!_entries.TryGetValue(message, out var entry))
        {
            outcome = Task.FromResult<CohortUpdated?>(null);
            return false;
        }

        outcome = ProcessAsync(entry, ct);
        return true;
    }

    private async Task<CohortUpdated?> ProcessAsync(Entry entry, CancellationToken ct)
    {
        var queue = entry.Queue;
        while (!entry.Completion.Task.IsCompleted)
        {
            List<Entry>? batch = null;
            Task running;
            lock (_gate)
            {
                if (queue.Running is null && queue.Pending.Count > 0)
                {
                    var take = Math.Min(queue.Pending.Count, Math.Max(1, options.Value.ImportBatchSize));
                    batch = new List<Entry>(take);
                    for (var i = 0; i < take; i++)
                    {
                        batch.Add(queue.Pending.Dequeue());
                    }

                    queue.Running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                running = queue.Running?.Task ?? Task.CompletedTask;
            }

            if (batch is null)
            {
                // Another consumer applies this cohort's queue: wait for our outcome or for it to stop, then look again.
                await Task.WhenAny(entry.Completion.Task, running).WaitAsync(ct);
                continue;
            }

            try
            {
                await ApplyAsync(batch, ct);
            }
            finally
            {
                lock (_gate)
                {
                    var done = queue.Running!;
                    queue.Running = null;
                    if (queue.Pending.Count == 0)
                    {
                        _queues.Remove(queue.Key);
                    }

                    done.SetResult();
                }
            }
        }

        return await entry.Completion.Task;
    }

    private async Task ApplyAsync(List<Entry> batch, CancellationToken ct)
    {
        try
        {
            var events = await processor.ProcessBatchAsync([.. batch.Select(e => e.Message)], ct);
            for (var i = 0; i < batch.Count; i++)
            {
                batch[i].Completion.TrySetResult(events[i]);
            }

            return;
        }
        catch (Exception ex) when (batch.Count > 1 && !ct.IsCancellationRequested)
        {
            Log.BatchFailed(logger, batch[0].Message.WorkspaceId, batch[0].Message.CohortId, batch.Count, ex.GetType().Name);
        }
        catch (Exception ex)
        {
            foreach (var entry in batch)
            {
                entry.Completion.TrySetException(ex);
            }

            return;
        }

        // Nothing of the batch was applied: one by one, so that a failing import fails alone.
        foreach (var entry in batch)
        {
            try
            {
                entry.Completion.TrySetResult(await processor.ProcessAsync(entry.Message, ct));
            }
            catch (Exception ex)
            {
                entry.Completion.TrySetException(ex);
            }
        }
    }

    private sealed class CohortQueue(string key)
    {
        public string Key { get; } = key;
        public Queue<Entry> Pending { get; } = new();

        /// <summary>Set while a consumer applies a batch of this queue; completed when it stops.</summary>
        public TaskCompletionSource? Running { get; set; }
    }

    private sealed class Entry(CohortExportReceived message, CohortQueue queue)
    {
        public CohortExportReceived Message { get; } = message;
        public CohortQueue Queue { get; } = queue;
        public TaskCompletionSource<CohortUpdated?> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 110, Level = LogLevel.Warning,
            Message = "A batch of {Count} imports for cohort {CohortId} of {WorkspaceId} failed ({Error}); applying them one by one")]
        public static partial void BatchFailed(ILogger logger, string workspaceId, string cohortId, int count, string error);
    }
}
