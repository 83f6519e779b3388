using Dapper;
using Npgsql;

namespace CohortBridge.ImportGateway.Data;

/// <summary>
/// Hands out each cohort's request order (CohortExportReceived.Sequence). Taken just before publishing, so a request
/// that starts after another one's 202 always gets a higher number, whichever gateway replica serves it.
/// </summary>
public sealed class CohortSequenceRepository(NpgsqlDataSource dataSource)
{
    public async Task<long> NextAsync(string workspaceId, string partner, string cohortId, CancellationToken ct)
    {
        // One statement, auto-committed: the row lock is held only for the increment itself.
        const string sql = """
            INSERT INTO cohort_sequences (workspace_id, partner, cohort_id, last_value)
            VALUES (@workspaceId, @partner, @cohortId, 1)
            ON CONFLICT (workspace_id, partner, cohort_id) DO UPDATE SET last_value = cohort_sequences.last_value + 1
            RETURNING last_value
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.ExecuteScalarAsync<long>(new CommandDefinition(sql, new { workspaceId, partner, cohortId }, cancellationToken: ct));
    }
}
