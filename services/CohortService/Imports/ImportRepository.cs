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
    /// <summary>
    /// Makes the import known as processing (committed on its own, so the status endpoint sees it at once). False when
    /// the import has no row and was accepted before the deletion horizon (<c>import_deletion_horizon</c>): its row
    /// may have been deleted after <see cref="CohortsOptions.ImportRetention"/>, so whether it was applied cannot be
    /// told (<see cref="ImportExpiredException"/>). Every copy of an import carries the same time (the gateway's first
    /// claim), the one stored as <c>accepted_at</c>.
    /// </summary>
    public static async Task<bool> RegisterAsync(NpgsqlDataSource dataSource, CohortExportReceived m, CancellationToken ct)
    {
        // The NOT EXISTS check reads without waiting: a snapshot's chunks all register the same import while other
        // chunks hold its row (progress updates), and ON CONFLICT alone would queue each one behind those updates.
        const string sql = """
            WITH m AS (
                SELECT @OccurredAt < (SELECT deleted_before FROM import_deletion_horizon) AS too_old,
                       EXISTS (SELECT 1 FROM imports WHERE import_id = @ImportId) AS known),
            registered AS (
                INSERT INTO imports (import_id, workspace_id, partner, cohort_id, kind, status, accepted_at)
                SELECT @ImportId, @WorkspaceId, @Partner, @CohortId, @kind, 'processing', @OccurredAt
                FROM m WHERE NOT m.known AND NOT m.too_old
                ON CONFLICT (import_id) DO NOTHING)
            SELECT known OR NOT too_old FROM m
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.ExecuteScalarAsync<bool>(new CommandDefinition(sql, new
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
    /// <see cref="RegisterAsync"/> for several messages in one statement (one round trip, committed on its own);
    /// returns the ids it refused.
    /// </summary>
    public static async Task<Guid[]> RegisterManyAsync(NpgsqlDataSource dataSource, IReadOnlyList<CohortExportReceived> messages, CancellationToken ct)
    {
        const string sql = """
            WITH m AS (
                SELECT i.*, i.accepted_at < (SELECT deleted_before FROM import_deletion_horizon) AS too_old,
                       EXISTS (SELECT 1 FROM imports x WHERE x.import_id = i.import_id) AS known
                FROM unnest(@ids::uuid[], @workspaces::text[], @partners::text[], @cohorts::text[], @kinds::text[], @accepted::timestamptz[])
                     AS i(import_id, workspace_id, partner, cohort_id, kind, accepted_at)),
            registered AS (
                INSERT INTO imports (import_id, workspace_id, partner, cohort_id, kind, status, accepted_at)
                SELECT import_id, workspace_id, partner, cohort_id, kind, 'processing', accepted_at
                FROM m WHERE NOT known AND NOT too_old
                ON CONFLICT (import_id) DO NOTHING)
            SELECT import_id FROM m WHERE too_old AND NOT known
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return [.. await conn.QueryAsync<Guid>(new CommandDefinition(sql, new
        {
            ids = messages.Select(m => m.ImportId).ToArray(),
            workspaces = messages.Select(m => m.WorkspaceId).ToArray(),
            partners = messages.Select(m => m.Partner).ToArray(),
            cohorts = messages.Select(m => m.CohortId).ToArray(),
            kinds = messages.Select(m => m.Kind.ToString().ToLowerInvariant()).ToArray(),
            accepted = messages.Select(m => m.OccurredAt.ToUniversalTime()).ToArray(),
        }, cancellationToken: ct))];
    }

    /// <summary>
    /// Locks several import rows in import id order (a fixed order: two transactions cannot deadlock on them) and
    /// returns them by import id.
    /// </summary>
    public static async Task<Dictionary<Guid, ImportRecord>> LockRecordsAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, Guid[] importIds, CancellationToken ct)
    {
        const string sql = """
            SELECT import_id, workspace_id, partner, cohort_id, kind, status, error, coalesce(event_json, pending_event::text) AS pending_event
            FROM imports WHERE import_id = ANY(@importIds) ORDER BY import_id FOR UPDATE
            """;
        var rows = await conn.QueryAsync<ImportRecord>(new CommandDefinition(sql, new { importIds }, tx, cancellationToken: ct));
        return rows.ToDictionary(r => r.ImportId);
    }

    public static Task<ImportRecord?> LockAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, CancellationToken ct)
    {
        const string sql = """
            SELECT import_id, workspace_id, partner, cohort_id, kind, status, error, coalesce(event_json, pending_event::text) AS pending_event
            FROM imports WHERE import_id = @importId FOR UPDATE
            """;
        return conn.QuerySingleOrDefaultAsync<ImportRecord>(new CommandDefinition(sql, new { importId }, tx, cancellationToken: ct));
    }

    private const string CompleteSql = """
        UPDATE imports SET
            status = @status, received = @received, matched = @matched, added = @added, removed = @removed,
            unmatched = @unmatched::jsonb, unmatched_sample = @sample, cohort_pk = @cohortPk,
            cohort_version = @cohortVersion, completed_at = now(), error = @error, event_json = @pendingEvent
        WHERE import_id = @importId
        """;

    public static Task CompleteAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, string status, ImportStatistics stats, long? cohortPk,
        long? cohortVersion, string? error, string? pendingEvent, CancellationToken ct)
    {
        return conn.ExecuteAsync(new CommandDefinition(CompleteSql, new
        {
            importId,
            status,
            received = stats.Received,
            matched = stats.Matched,
            added = stats.Added,
            removed = stats.Removed,
            unmatched = JsonSerializer.Serialize(stats.Unmatched),
            sample = stats.UnmatchedSample.ToArray(),
            cohortPk,
            cohortVersion,
            error,
            pendingEvent,
        }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// <see cref="CompleteAsync"/> as a command of <paramref name="batch"/> (completed, no error): several imports
    /// completed in one round trip.
    /// </summary>
    public static void AddComplete(
        NpgsqlBatch batch, Guid importId, ImportStatistics stats, long cohortPk, long cohortVersion, string? pendingEvent)
    {
        batch.BatchCommands.Add(new NpgsqlBatchCommand(CompleteSql)
        {
            Parameters =
            {
                new NpgsqlParameter("importId", importId),
                new NpgsqlParameter("status", ImportStatus.Completed),
                new NpgsqlParameter("received", stats.Received),
                new NpgsqlParameter("matched", stats.Matched),
                new NpgsqlParameter("added", stats.Added),
                new NpgsqlParameter("removed", stats.Removed),
                new NpgsqlParameter("unmatched", JsonSerializer.Serialize(stats.Unmatched)),
                new NpgsqlParameter("sample", stats.UnmatchedSample.ToArray()),
                new NpgsqlParameter("cohortPk", cohortPk),
                new NpgsqlParameter("cohortVersion", cohortVersion),
                new NpgsqlParameter("error", NpgsqlTypes.NpgsqlDbType.Text) { Value = DBNull.Value },
                new NpgsqlParameter("pendingEvent", NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)pendingEvent ?? DBNull.Value },
            },
        });
    }

    public static async Task<ImportRecord?> GetAsync(NpgsqlDataSource dataSource, string ws, Guid importId, CancellationToken ct)
    {
        // A snapshot still staging: its progress is on its chunk rows (snapshot_progress) until it finishes.
        const string sql = """
            SELECT i.import_id, i.workspace_id, i.partner, i.cohort_id, i.kind, i.status,
                   i.received + coalesce(p.identifiers, 0) AS received, i.matched, i.added, i.removed,
                   CASE WHEN coalesce(p.invalid, 0) = 0 THEN i.unmatched ELSE jsonb_set(i.unmatched, ARRAY['invalid_identifier'],
                       to_jsonb(coalesce((i.unmatched ->> 'invalid_identifier')::bigint, 0) + p.invalid)) END::text AS unmatched,
                   (coalesce(p.invalid_sample, '{}') || i.unmatched_sample)[1:@sampleSize] AS unmatched_sample,
                   i.cohort_version, i.accepted_at, i.completed_at, i.error,
                   CASE WHEN p.identifiers IS NULL THEN i.processed ELSE coalesce(i.processed, 0) + p.identifiers END AS processed
            FROM imports i
            LEFT JOIN LATERAL (SELECT * FROM snapshot_progress s WHERE s.import_id = i.import_id) p ON true
            WHERE i.import_id = @importId AND i.workspace_id = @ws
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleOrDefaultAsync<ImportRecord>(new CommandDefinition(
            sql, new { ws, importId, sampleSize = ImportStatistics.SampleSize }, cancellationToken: ct));
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
