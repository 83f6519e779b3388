using System.Text.Json;
using CohortBridge.Contracts;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

public static class ImportStatus
{
    public const string Processing = "processing";
    public const string Completed = "completed";
    public const string Failed = "failed";
}

/// <summary>An import as its status endpoint and the admin API show it.</summary>
public sealed class ImportRecord
{
    public Guid ImportId { get; init; }
    public string WorkspaceId { get; init; } = "";
    public string Partner { get; init; } = "";
    public string CohortId { get; init; } = "";
    public string Kind { get; init; } = "";
    public string Status { get; init; } = "";
    public long Received { get; init; }
    public long Matched { get; init; }
    public long Added { get; init; }
    public long Removed { get; init; }
    public string Unmatched { get; init; } = "{}";
    public string[] UnmatchedSample { get; init; } = [];
    public long? CohortVersion { get; init; }
    public DateTimeOffset AcceptedAt { get; init; }
    public DateTimeOffset? CompletedAt { get; init; }
    public string? Error { get; init; }
    public string? PendingEvent { get; init; }

    /// <summary>Snapshots only: identifiers matched and staged so far.</summary>
    public long? Processed { get; init; }
}

public static class ImportRepository
{
    /// <summary>Makes the import known as processing (committed on its own, so the status endpoint sees it at once).</summary>
    public static async Task RegisterAsync(NpgsqlDataSource dataSource, CohortExportReceived m, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO imports (import_id, workspace_id, partner, cohort_id, kind, status, accepted_at)
            VALUES (@ImportId, @WorkspaceId, @Partner, @CohortId, @kind, 'processing', @OccurredAt)
            ON CONFLICT (import_id) DO NOTHING
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new
        {
            m.ImportId,
            m.WorkspaceId,
            m.Partner,
            m.CohortId,
            kind = m.Kind.ToString().ToLowerInvariant(),
            OccurredAt = m.OccurredAt.ToUniversalTime(),
        }, cancellationToken: ct));
    }

    /// <summary>
    /// <see cref="RegisterAsync"/> for several messages in one statement (one round trip, committed on its own).
    /// </summary>
    public static async Task RegisterManyAsync(NpgsqlDataSource dataSource, IReadOnlyList<CohortExportReceived> messages, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO imports (import_id, workspace_id, partner, cohort_id, kind, status, accepted_at)
            SELECT i.import_id, i.workspace_id, i.partner, i.cohort_id, i.kind, 'processing', i.accepted_at
            FROM unnest(@ids::uuid[], @workspaces::text[], @partners::text[], @cohorts::text[], @kinds::text[], @accepted::timestamptz[])
                 AS i(import_id, workspace_id, partner, cohort_id, kind, accepted_at)
            ON CONFLICT (import_id) DO NOTHING
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new
        {
            ids = messages.Select(m => m.ImportId).ToArray(),
            workspaces = messages.Select(m => m.WorkspaceId).ToArray(),
            partners = messages.Select(m => m.Partner).ToArray(),
            cohorts = messages.Select(m => m.CohortId).ToArray(),
            kinds = messages.Select(m => m.Kind.ToString().ToLowerInvariant()).ToArray(),
            accepted = messages.Select(m => m.OccurredAt.ToUniversalTime()).ToArray(),
        }, cancellationToken: ct));
    }

    /// <summary>Locks several import rows in import id order (a fixed order: two transactions cannot deadlock on them).</summary>
    public static Task LockManyAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid[] importIds, CancellationToken ct)
    {
        const string sql = "SELECT import_id FROM imports WHERE import_id = ANY(@importIds) ORDER BY import_id FOR UPDATE";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { importIds }, tx, cancellationToken: ct));
    }

    public static Task<ImportRecord?> LockAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, CancellationToken ct)
    {
        const string sql = """
            SELECT import_id, workspace_id, partner, cohort_id, kind, status, error, pending_event::text AS pending_event
            FROM imports WHERE import_id = @importId FOR UPDATE
            """;
        return conn.QuerySingleOrDefaultAsync<ImportRecord>(new CommandDefinition(sql, new { importId }, tx, cancellationToken: ct));
    }

    public static Task CompleteAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, string status, ImportStatistics stats, long? cohortPk,
        long? cohortVersion, string? error, string? pendingEvent, CancellationToken ct)
    {
        const string sql = """
            UPDATE imports SET
                status = @status, received = @Received, matched = @Matched, added = @Added, removed = @Removed,
                unmatched = @unmatched::jsonb, unmatched_sample = @sample, cohort_pk = @cohortPk,
                cohort_version = @cohortVersion, completed_at = now(), error = @error, pending_event = @pendingEvent::jsonb
            WHERE import_id = @importId
            """;
        return conn.ExecuteAsync(new CommandDefinition(sql, new
        {
            importId,
            status,
            stats.Received,
            stats.Matched,
            stats.Added,
            stats.Removed,
            unmatched = JsonSerializer.Serialize(stats.Unmatched),
            sample = stats.UnmatchedSample.ToArray(),
            cohortPk,
            cohortVersion,
            error,
            pendingEvent,
        }, tx, cancellationToken: ct));
    }

    public static async Task<ImportRecord?> GetAsync(NpgsqlDataSource dataSource, string ws, Guid importId, CancellationToken ct)
    {
        const string sql = """
            SELECT import_id, workspace_id, partner, cohort_id, kind, status, received, matched, added, removed,
                   unmatched::text AS unmatched, unmatched_sample, cohort_version, accepted_at, completed_at, error, processed
            FROM imports WHERE import_id = @importId AND workspace_id = @ws
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleOrDefaultAsync<ImportRecord>(new CommandDefinition(sql, new { ws, importId }, cancellationToken: ct));
    }

    public static async Task<List<ImportRecord>> RecentForCohortAsync(NpgsqlConnection conn, long cohortPk, int limit, CancellationToken ct)
    {
        const string sql = """
            SELECT import_id, workspace_id, partner, cohort_id, kind, status, received, matched, added, removed,
                   unmatched::text AS unmatched, unmatched_sample, cohort_version, accepted_at, completed_at, error, processed
            FROM imports WHERE cohort_pk = @cohortPk
            ORDER BY started_at DESC LIMIT @limit
            """;
        return (await conn.QueryAsync<ImportRecord>(new CommandDefinition(sql, new { cohortPk, limit }, cancellationToken: ct))).AsList();
    }
}
