using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Data;

public sealed class CohortListRow
{
    public long Id { get; init; }
    public string WorkspaceId { get; init; } = "";
    public string Partner { get; init; } = "";
    public string CohortId { get; init; } = "";
    public string Name { get; init; } = "";
    public long Version { get; init; }
    public long MemberCount { get; init; }
    public bool Archived { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset UpdatedAt { get; init; }
    public Guid? LastImportId { get; init; }
    public string? LastImportStatus { get; init; }
    public long? LastImportReceived { get; init; }
    public long? LastImportMatched { get; init; }
    public DateTimeOffset? LastImportAcceptedAt { get; init; }
    public DateTimeOffset? LastImportCompletedAt { get; init; }
}

public sealed class ChangeRow
{
    public long Version { get; init; }
    public string Name { get; init; } = "";
    public bool Archived { get; init; }
    public int[] Added { get; init; } = [];
    public int[] Removed { get; init; } = [];

    /// <summary>
    /// The log does not hold this version's users (it is incomplete across it): the version changed too many of them, or
    /// they were cleared after Cohorts:ReplayRetention.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool SetsOmitted { get; init; }
}

/// <summary>Reads for the admin and internal APIs.</summary>
public static class CohortQueries
{
    private const string ListSelect = """
        SELECT c.id, c.workspace_id, c.partner, c.cohort_id, c.name, c.version, c.member_count, c.archived,
               c.created_at, c.updated_at,
               i.import_id AS last_import_id, i.status AS last_import_status, i.received AS last_import_received,
               i.matched AS last_import_matched, i.accepted_at AS last_import_accepted_at,
               i.completed_at AS last_import_completed_at
        FROM cohorts c
        LEFT JOIN LATERAL (
            SELECT import_id, status, received, matched, accepted_at, completed_at FROM imports
            WHERE cohort_pk = c.id ORDER BY started_at DESC LIMIT 1
        ) i ON true
        """;

    /// <summary>
    /// Live cohorts whose name or cohort_id contains <paramref name="q"/>, case-insensitively (Unicode lower case via
    /// ICU), in creation order after the cursor's id.
    /// </summary>
    public static async Task<List<CohortListRow>> SearchAsync(
        NpgsqlConnection conn, string ws, string? partner, string? q, long after, int limit, CancellationToken ct)
    {
        const string sql = ListSelect + """

            WHERE c.workspace_id = @ws AND NOT c.archived AND c.id > @after
              AND (@partner::text IS NULL OR c.partner = @partner)
              AND (@q::text IS NULL
                   OR strpos(lower(c.name COLLATE "und-x-icu"), lower(@q::text COLLATE "und-x-icu")) > 0
                   OR strpos(lower(c.cohort_id COLLATE "und-x-icu"), lower(@q::text COLLATE "und-x-icu")) > 0)
            ORDER BY c.id
            LIMIT @limit
            """;
        return (await conn.QueryAsync<CohortListRow>(new CommandDefinition(
            sql, new { ws, partner, q, after, limit }, cancellationToken: ct))).AsList();
    }

    public static Task<CohortListRow?> GetAsync(
        NpgsqlConnection conn, NpgsqlTransaction? tx, string ws, string partner, string cohortId, CancellationToken ct)
    {
        const string sql = ListSelect + """

            WHERE c.workspace_id = @ws AND c.partner = @partner AND c.cohort_id = @cohortId
            """;
        return conn.QuerySingleOrDefaultAsync<CohortListRow>(new CommandDefinition(sql, new { ws, partner, cohortId }, tx, cancellationToken: ct));
    }

    public static async Task<List<ChangeRow>> ChangesAfterAsync(NpgsqlConnection conn, NpgsqlTransaction tx, long cohortPk, long after, CancellationToken ct)
    {
        const string sql = """
            SELECT version, name, archived, added, removed, sets_omitted FROM cohort_changes
            WHERE cohort_pk = @cohortPk AND version > @after ORDER BY version
            """;
        return (await conn.QueryAsync<ChangeRow>(new CommandDefinition(sql, new { cohortPk, after }, tx, cancellationToken: ct))).AsList();
    }
}
