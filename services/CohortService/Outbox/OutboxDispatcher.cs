using CohortBridge.CohortService.Directory;
using CohortBridge.CohortService.Imports;
using CohortBridge.Contracts;
using MassTransit;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Outbox;

/// <summary>
/// Publishes outbox rows (directory changes as batched UserDirectoryChanged with each user's current identity, and
/// ready CohortUpdated events) and deletes them in the same transaction: at-least-once, in id order per process.
/// </summary>
/// <remarks>
/// Directory rows are published by one replica at a time (<see cref="OutboxRepository.LockDirectoryPublishingAsync"/>):
/// each event carries the identity as read when it is published, and SegmentService keeps the last one it receives.
/// Two replicas reading and publishing at once could deliver an identity read earlier after one read later (a deleted
/// user back, an identified one anonymous again). CohortUpdated rows need no such order: their versions order them.
/// </remarks>
public sealed partial class OutboxDispatcher(
    NpgsqlDataSource dataSource, IBus bus, OutboxSignal signal, IOptions<CohortsOptions> options, ILogger<OutboxDispatcher> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                while (await DispatchOnceAsync(stoppingToken))
                {
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.DispatchFailed(logger, ex);
            }

            try
            {
                await signal.WaitAsync(options.Value.OutboxPollInterval, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Publishes one batch of rows; false when the outbox was empty.</summary>
    public async Task<bool> DispatchOnceAsync(CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var rows = await OutboxRepository.TakeAsync(conn, tx, 20, ct);
        if (rows.Count == 0)
        {
            return false;
        }

        if (rows.Exists(r => r.CohortUpdated is null))
        {
            await OutboxRepository.LockDirectoryPublishingAsync(conn, tx, ct);
        }

        var batchSize = Math.Max(1, options.Value.DirectoryBatchSize);
        foreach (var row in rows)
        {
            if (row.CohortUpdated is { } json)
            {
                await bus.Publish(CohortEvents.Deserialize(json), ct);
                continue;
            }

            foreach (var chunk in (row.Ordinals ?? []).Chunk(batchSize))
            {
                var (version, users) = await DirectoryReader.UsersAsync(conn, tx, row.WorkspaceId, chunk, ct);
                await bus.Publish(new UserDirectoryChanged
                {
                    WorkspaceId = row.WorkspaceId,
                    Users = users,
                    DirectoryVersion = version,
                    OccurredAt = DateTimeOffset.UtcNow,
                }, ct);
            }
        }

        await OutboxRepository.DeleteAsync(conn, tx, [.. rows.Select(r => r.Id)], ct);
        await tx.CommitAsync(ct);
        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 300, Level = LogLevel.Warning, Message = "Outbox dispatch failed; retrying at the next poll")]
        public static partial void DispatchFailed(ILogger logger, Exception ex);
    }
}
