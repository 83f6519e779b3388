using System.Buffers.Binary;
using System.Data;
using System.Text.Json;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Directory;
using CohortBridge.CohortService.Imports;
using CohortBridge.ServiceDefaults;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Endpoints;

/// <summary>
/// Service-to-service API (never exposed by the gateway): import status for the gateway, and everything
/// SegmentService needs to build and repair its projections.
/// </summary>
public static class InternalEndpoints
{
    private static readonly byte[] NewLine = "\n"u8.ToArray();

    public static IEndpointRouteBuilder MapInternalEndpoints(this IEndpointRouteBuilder app)
    {
        // Directories and members are personal data: the calling services present the service token.
        var group = app.MapGroup("/internal").RequireServiceToken();
        group.MapGet("/workspaces/{workspace_id}/imports/{import_id}", ImportStatus);
        group.MapGet("/cohorts", AllCohorts);
        group.MapGet("/workspaces", Workspaces);
        group.MapGet("/workspaces/{workspace_id}/directory", DirectoryStream);
        group.MapGet("/workspaces/{workspace_id}/live-users", LiveUsers);
        group.MapGet("/workspaces/{workspace_id}/cohorts/{partner}/{cohort_id}/members", Members);
        group.MapGet("/workspaces/{workspace_id}/cohorts/{partner}/{cohort_id}/changes", Changes);
        return app;
    }

    private static async Task<IResult> ImportStatus(HttpContext context, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        var ws = RawPath.Segment(context, 2);
        if (!Guid.TryParse(RawPath.Segment(context, 4), out var importId))
        {
            return RawPath.BadRequest("import_id must be a UUID");
        }

        var record = await ImportRepository.GetAsync(dataSource, ws, importId, ct);
        return record is null
            ? RawPath.NotFound("CohortService has not seen this import.")
            : TypedResults.Ok(ImportStatusResponse.From(record));
    }

    private static async Task AllCohorts(HttpContext context, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        const string sql = """
            SELECT workspace_id, partner, cohort_id, name, version, archived, member_count FROM cohorts ORDER BY id
            """;
        context.Response.ContentType = "application/x-ndjson";
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var reader = await conn.ExecuteReaderAsync(new CommandDefinition(sql, cancellationToken: ct));
        var parser = reader.GetRowParser<CohortLine>();
        while (await reader.ReadAsync(ct))
        {
            await WriteLineAsync(context.Response.Body, parser(reader), ct);
        }
    }

    private static async Task<IResult> Workspaces(NpgsqlDataSource dataSource, CancellationToken ct)
    {
        const string sql = "SELECT workspace_id FROM workspaces ORDER BY workspace_id";
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var items = await conn.QueryAsync<string>(new CommandDefinition(sql, cancellationToken: ct));
        return TypedResults.Ok(new { items });
    }

    private static async Task DirectoryStream(HttpContext context, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        var ws = RawPath.Segment(context, 2);
        context.Response.ContentType = "application/x-ndjson";
        await using var conn = await dataSource.OpenConnectionAsync(ct);

        // Read before the users: every identity streamed is at least this recent (UserDirectoryChanged.DirectoryVersion).
        var version = await DirectoryReader.VersionAsync(conn, ws, ct);
        context.Response.Headers["X-Directory-Version"] = version.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await foreach (var user in DirectoryReader.AllAsync(conn, ws, ct))
        {
            await WriteLineAsync(context.Response.Body, user, ct);
        }
    }

    /// <summary>Ordinals of the workspace's live (not deleted) users: little-endian int32, ascending.</summary>
    private static async Task LiveUsers(HttpContext context, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        const string sql = "SELECT ordinal FROM users WHERE workspace_id = @ws AND deleted_at IS NULL ORDER BY ordinal";
        var ws = RawPath.Segment(context, 2);
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        context.Response.ContentType = "application/octet-stream";
        await using var reader = await conn.ExecuteReaderAsync(new CommandDefinition(sql, new { ws }, cancellationToken: ct));
        await WriteOrdinalsAsync(context.Response.Body, reader, ct);
    }

    /// <summary>A cohort's members and version read from one snapshot (repeatable read), so they agree.</summary>
    private static async Task Members(HttpContext context, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        // Ordered by the primary key's own order: right after a large snapshot the statistics do not know the cohort yet
        // and, with sorting allowed, the planner chose a bitmap scan plus a sort (22 s for 10M members).
        const string orderedByIndex = "SET LOCAL enable_sort = off";
        const string sql = "SELECT ordinal FROM memberships WHERE cohort_pk = @pk ORDER BY ordinal";
        var (ws, partner, cohortId) = (RawPath.Segment(context, 2), RawPath.Segment(context, 4), RawPath.Segment(context, 5));
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct);
        var cohort = await CohortQueries.GetAsync(conn, tx, ws, partner, cohortId, ct);
        if (cohort is null)
        {
            await RawPath.NotFound("No such cohort.").ExecuteAsync(context);
            return;
        }

        context.Response.ContentType = "application/octet-stream";
        context.Response.Headers["X-Cohort-Version"] = cohort.Version.ToString(System.Globalization.CultureInfo.InvariantCulture);
        context.Response.Headers["X-Cohort-Archived"] = cohort.Archived ? "true" : "false";
        await conn.ExecuteAsync(new CommandDefinition(orderedByIndex, transaction: tx, cancellationToken: ct));
        await using (var reader = await conn.ExecuteReaderAsync(new CommandDefinition(sql, new { pk = cohort.Id }, tx, cancellationToken: ct)))
        {
            await WriteOrdinalsAsync(context.Response.Body, reader, ct);
        }

        await tx.CommitAsync(ct);
    }

    private static async Task<IResult> Changes(HttpContext context, NpgsqlDataSource dataSource, long? after, CancellationToken ct)
    {
        if (after is null or < 0)
        {
            return RawPath.BadRequest("after must be a version number (0 or more)");
        }

        var (ws, partner, cohortId) = (RawPath.Segment(context, 2), RawPath.Segment(context, 4), RawPath.Segment(context, 5));
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct);
        var cohort = await CohortQueries.GetAsync(conn, tx, ws, partner, cohortId, ct);
        if (cohort is null)
        {
            return RawPath.NotFound("No such cohort.");
        }

        var items = await CohortQueries.ChangesAfterAsync(conn, tx, cohort.Id, after.Value, ct);
        await tx.CommitAsync(ct);
        // Complete when the log holds every version after v with its sets: a version that changed more than
        // Cohorts:ChangeLogSetLimit users keeps none, and ReplayHistorySweeper clears them after Cohorts:ReplayRetention.
        var complete = after.Value >= cohort.Version
            || (items.Count > 0 && items[0].Version == after.Value + 1 && items[^1].Version == cohort.Version
                && !items.Exists(i => i.SetsOmitted));
        return TypedResults.Ok(new ChangesResponse(cohort.Version, complete, items));
    }

    private static async Task WriteOrdinalsAsync(Stream body, System.Data.Common.DbDataReader reader, CancellationToken ct)
    {
        var buffer = new byte[64 * 1024];
        var used = 0;
        while (await reader.ReadAsync(ct))
        {
            BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(used), reader.GetInt32(0));
            used += 4;
            if (used == buffer.Length)
            {
                await body.WriteAsync(buffer, ct);
                used = 0;
            }
        }

        if (used > 0)
        {
            await body.WriteAsync(buffer.AsMemory(0, used), ct);
        }
    }

    private static async Task WriteLineAsync<T>(Stream body, T value, CancellationToken ct)
    {
        await JsonSerializer.SerializeAsync(body, value, PlatformJson.Options, ct);
        await body.WriteAsync(NewLine, ct);
    }

    private sealed record ChangesResponse(long CurrentVersion, bool Complete, List<ChangeRow> Items);

    private sealed class CohortLine
    {
        public string WorkspaceId { get; init; } = "";
        public string Partner { get; init; } = "";
        public string CohortId { get; init; } = "";
        public string Name { get; init; } = "";
        public long Version { get; init; }
        public bool Archived { get; init; }
        public long MemberCount { get; init; }
    }
}
