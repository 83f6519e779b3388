using Dapper;
using Npgsql;

namespace CohortBridge.SegmentService.Data;

/// <summary>
/// A stored segment; <see cref="Filter"/> is its canonical filter JSON. Times are UTC <see cref="DateTime"/>s, which is
/// what Npgsql reads from timestamptz.
/// </summary>
public sealed record Segment(Guid SegmentId, string WorkspaceId, string Name, string Filter, DateTime CreatedAt, DateTime UpdatedAt);

public sealed class SegmentRepository(NpgsqlDataSource dataSource)
{
    // Aliases without underscores so Dapper maps them onto the record's constructor parameters.
    private const string Columns =
        "segment_id AS segmentid, workspace_id AS workspaceid, name, filter::text AS filter, created_at AS createdat, updated_at AS updatedat";

    public async Task InsertAsync(Segment segment, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO segments (segment_id, workspace_id, name, filter, created_at, updated_at)
            VALUES (@SegmentId, @WorkspaceId, @Name, @Filter::jsonb, @CreatedAt, @UpdatedAt)
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, segment, cancellationToken: ct));
    }

    public async Task<Segment?> GetAsync(string workspaceId, Guid segmentId, CancellationToken ct)
    {
        const string sql = $"""
            SELECT {Columns} FROM segments WHERE workspace_id = @WorkspaceId AND segment_id = @SegmentId
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleOrDefaultAsync<Segment>(new CommandDefinition(
            sql, new { WorkspaceId = workspaceId, SegmentId = segmentId }, cancellationToken: ct));
    }

    /// <summary>A page in segment_id order, starting after <paramref name="after"/>.</summary>
    public async Task<IReadOnlyList<Segment>> ListAsync(string workspaceId, Guid? after, int limit, CancellationToken ct)
    {
        const string sql = $"""
            SELECT {Columns} FROM segments
             WHERE workspace_id = @WorkspaceId AND (@After::uuid IS NULL OR segment_id > @After::uuid)
             ORDER BY segment_id
             LIMIT @Limit
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var rows = await conn.QueryAsync<Segment>(new CommandDefinition(
            sql, new { WorkspaceId = workspaceId, After = after, Limit = limit }, cancellationToken: ct));
        return rows.AsList();
    }

    public async Task<Segment?> UpdateAsync(string workspaceId, Guid segmentId, string name, string filter, DateTime updatedAt, CancellationToken ct)
    {
        const string sql = $"""
            UPDATE segments SET name = @Name, filter = @Filter::jsonb, updated_at = @UpdatedAt
             WHERE workspace_id = @WorkspaceId AND segment_id = @SegmentId
            RETURNING {Columns}
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleOrDefaultAsync<Segment>(new CommandDefinition(
            sql, new { WorkspaceId = workspaceId, SegmentId = segmentId, Name = name, Filter = filter, UpdatedAt = updatedAt },
            cancellationToken: ct));
    }

    public async Task<bool> DeleteAsync(string workspaceId, Guid segmentId, CancellationToken ct)
    {
        const string sql = "DELETE FROM segments WHERE workspace_id = @WorkspaceId AND segment_id = @SegmentId";
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.ExecuteAsync(new CommandDefinition(
            sql, new { WorkspaceId = workspaceId, SegmentId = segmentId }, cancellationToken: ct)) > 0;
    }
}
