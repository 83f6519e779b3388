using CohortBridge.CohortService.Imports;
using CohortBridge.Contracts;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Outbox;

/// <summary>Wakes the outbox dispatcher after a commit so events leave at once instead of at the next poll.</summary>
public sealed class OutboxSignal
{
    private readonly SemaphoreSlim _signal = new(0, 1);

    public void Notify()
    {
        try
        {
            if (_signal.CurrentCount == 0)
            {
                _signal.Release();
            }
        }
        catch (SemaphoreFullException)
        {
            // Already signalled.
        }
    }

    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) => _signal.WaitAsync(timeout, ct);
}

public sealed class OutboxRow
{
    public long Id { get; init; }
    public string WorkspaceId { get; init; } = "";
    public int[]? Ordinals { get; init; }
    public string? CohortUpdated { get; init; }
}

public static class OutboxRepository
{
    public static Task AddDirectoryChangeAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string ws, int[] ordinals, CancellationToken ct)
    {
        const string sql = "INSERT INTO outbox (workspace_id, ordinals) VALUES (@ws, @ordinals)";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { ws, ordinals }, tx, cancellationToken: ct));
    }

    public static Task AddCohortUpdatedAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string ws, CohortUpdated evt, CancellationToken ct)
    {
        const string sql = "INSERT INTO outbox (workspace_id, cohort_updated) VALUES (@ws, @json::jsonb)";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { ws, json = CohortEvents.Serialize(evt) }, tx, cancellationToken: ct));
    }

    /// <summary>The oldest rows no other dispatcher holds, locked until the caller's transaction ends.</summary>
    public static async Task<List<OutboxRow>> TakeAsync(NpgsqlConnection conn, NpgsqlTransaction tx, int limit, CancellationToken ct)
    {
        const string sql = """
            SELECT id, workspace_id, ordinals, cohort_updated::text AS cohort_updated
            FROM outbox ORDER BY id LIMIT @limit FOR UPDATE SKIP LOCKED
            """;
        return (await conn.QueryAsync<OutboxRow>(new CommandDefinition(sql, new { limit }, tx, cancellationToken: ct))).AsList();
    }

    /// <summary>Transaction-level advisory lock held while a dispatcher reads and publishes directory rows.</summary>
    public const long DirectoryLockKey = 727_275;

    /// <summary>Waits until no other dispatcher publishes directory rows; held until the caller's transaction ends.</summary>
    public static Task LockDirectoryPublishingAsync(NpgsqlConnection conn, NpgsqlTransaction tx, CancellationToken ct)
    {
        const string sql = "SELECT pg_advisory_xact_lock(@key)";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { key = DirectoryLockKey }, tx, cancellationToken: ct));
    }

    public static Task DeleteAsync(NpgsqlConnection conn, NpgsqlTransaction tx, long[] ids, CancellationToken ct)
    {
        const string sql = "DELETE FROM outbox WHERE id = ANY(@ids)";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { ids }, tx, cancellationToken: ct));
    }
}
