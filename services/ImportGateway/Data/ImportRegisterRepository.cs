using Dapper;
using Npgsql;

namespace CohortBridge.ImportGateway.Data;

public sealed record AcceptedImport(Guid ImportId, string WorkspaceId, string Partner, string CohortId, string Kind, DateTime AcceptedAt);

/// <summary>The register of accepted imports (the tenant boundary of import status).</summary>
public sealed class ImportRegisterRepository(NpgsqlDataSource dataSource)
{
    /// <summary>
    /// Records an import as accepted at <paramref name="acceptedAt"/>: the time its message carries (CohortService's
    /// accepted_at too), taken before publishing. The insert's own now() came after CohortService could have completed
    /// the import, and status then showed completed_at before accepted_at.
    /// </summary>
    public async Task RecordAsync(
        Guid importId, string workspaceId, string partner, string cohortId, string kind, DateTimeOffset acceptedAt, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO accepted_imports (import_id, workspace_id, partner, cohort_id, kind, accepted_at)
            VALUES (@importId, @workspaceId, @partner, @cohortId, @kind, @acceptedAt)
            ON CONFLICT (import_id) DO NOTHING
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(
            sql, new { importId, workspaceId, partner, cohortId, kind, acceptedAt }, cancellationToken: ct));
    }

    /// <summary>The import if this workspace and partner made it; null otherwise (another tenant's import looks absent).</summary>
    public async Task<AcceptedImport?> FindAsync(Guid importId, string workspaceId, string partner, CancellationToken ct)
    {
        const string sql = """
            SELECT import_id, workspace_id, partner, cohort_id, kind, accepted_at
            FROM accepted_imports
            WHERE import_id = @importId AND workspace_id = @workspaceId AND partner = @partner
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleOrDefaultAsync<AcceptedImport>(
            new CommandDefinition(sql, new { importId, workspaceId, partner }, cancellationToken: ct));
    }

    /// <summary>Deletes accepted imports older than the retention (one bounded batch); returns how many.</summary>
    public async Task<int> PurgeAsync(TimeSpan retention, int batch, CancellationToken ct)
    {
        const string sql = """
            DELETE FROM accepted_imports
            WHERE import_id IN (SELECT import_id FROM accepted_imports WHERE accepted_at < now() - @retention LIMIT @batch)
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.ExecuteAsync(new CommandDefinition(sql, new { retention, batch }, cancellationToken: ct));
    }
}
