using Dapper;
using static CohortBridge.CohortService.Tests.CohortServiceHost;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// A workspace that is small next to the others must still be known to the planner's statistics once it has grown,
/// or matching its identifiers reads the whole workspace per identifier. Here a workspace of 10,000 users arrives in
/// small batches next to one of 250,000: each batch changes the table by 1%, far below the table-wide staleness rule.
/// </summary>
public sealed class DirectoryStatisticsTests : IAsyncLifetime
{
    private readonly CohortServiceHost _host = new();

    public Task InitializeAsync() => _host.StartAsync();

    public Task DisposeAsync() => _host.DisposeAsync().AsTask();

    [Fact]
    public async Task BulkUpsert_SmallWorkspaceDoublesInSmallBatches_StatisticsKnowIt()
    {
        var big = NewWorkspace();
        await _host.UpsertAsync(big, [.. Enumerable.Range(0, 250_000).Select(i => $$"""{"external_id":"b{{i}}"}""")]);

        var small = NewWorkspace();
        await using var conn = await _host.OpenAsync();
        for (var batch = 0; batch < 4; batch++)
        {
            Assert.False(await KnownToStatisticsAsync(conn, small), "known before it doubled by 10,000 users");
            await _host.UpsertAsync(small, [.. Enumerable.Range(batch * 2_500, 2_500).Select(i => $$"""{"external_id":"s{{i}}"}""")]);
        }

        Assert.True(await KnownToStatisticsAsync(conn, small), "the directory tables were analyzed once the workspace reached 10,000 users");
    }

    private static Task<bool> KnownToStatisticsAsync(Npgsql.NpgsqlConnection conn, string ws) =>
        conn.ExecuteScalarAsync<bool>("""
            SELECT coalesce(bool_or(@ws = ANY(most_common_vals::text::text[])), false)
            FROM pg_stats WHERE tablename = 'users' AND attname = 'workspace_id'
            """, new { ws });
}
