using CohortBridge.Contracts;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Data;

/// <summary>The highest request sequence applied per cohort (table <c>cohort_sequences</c>).</summary>
public static class CohortSequences
{
    /// <summary>A cohort's key in memory (the cohort ordering, waiting and grouping are all per this key).</summary>
    public static string Key(CohortExportReceived m) => $"{m.WorkspaceId}\n{m.Partner}\n{m.CohortId}";

    /// <summary>The highest sequence applied for the message's cohort (0 when none).</summary>
    public static async Task<long> AppliedAsync(NpgsqlDataSource dataSource, CohortExportReceived m, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await AppliedAsync(conn, null, m.WorkspaceId, m.Partner, m.CohortId, ct);
    }

    public static async Task<long> AppliedAsync(
        NpgsqlConnection conn, NpgsqlTransaction? tx, string workspaceId, string partner, string cohortId, CancellationToken ct)
    {
        const string sql = """
            SELECT applied FROM cohort_sequences
            WHERE workspace_id = @workspaceId AND partner = @partner AND cohort_id = @cohortId
            """;
        return await conn.QuerySingleOrDefaultAsync<long?>(new CommandDefinition(
            sql, new { workspaceId, partner, cohortId }, tx, cancellationToken: ct)) ?? 0;
    }

    /// <summary>
    /// Records, in the transaction that applies (or fails, or skips as already applied) the message, that its sequence
    /// is done. Never moves backwards: a message that arrives after its successors were let through is late, not next.
    /// </summary>
    public static Task AdvanceAsync(NpgsqlConnection conn, NpgsqlTransaction tx, CohortExportReceived m, CancellationToken ct) =>
        AdvanceAsync(conn, tx, m.WorkspaceId, m.Partner, m.CohortId, m.Sequence, ct);

    /// <inheritdoc cref="AdvanceAsync(NpgsqlConnection, NpgsqlTransaction, CohortExportReceived, CancellationToken)"/>
    public static Task AdvanceAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, string workspaceId, string partner, string cohortId, long? sequence, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO cohort_sequences (workspace_id, partner, cohort_id, applied)
            VALUES (@workspaceId, @partner, @cohortId, @sequence)
            ON CONFLICT (workspace_id, partner, cohort_id)
            DO UPDATE SET applied = GREATEST(cohort_sequences.applied, excluded.applied)
            """;
        return sequence is null
            ? Task.CompletedTask
            : conn.ExecuteAsync(new CommandDefinition(sql, new { workspaceId, partner, cohortId, sequence }, tx, cancellationToken: ct));
    }
}
