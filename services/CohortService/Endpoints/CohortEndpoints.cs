using System.Text.Json;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Imports;
using CohortBridge.ServiceDefaults;
using Npgsql;

namespace CohortBridge.CohortService.Endpoints;

/// <summary>Admin read API: find the right cohort (search by part of name or id), see its recent imports.</summary>
public static class CohortEndpoints
{
    private const int RecentImports = 20;

    public static IEndpointRouteBuilder MapCohortEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/workspaces/{workspace_id}/cohorts").RequireAdminToken();
        group.MapGet("/", List);
        group.MapGet("/{partner}/{cohort_id}", Detail);
        return app;
    }

    private static async Task<IResult> List(
        HttpContext context, NpgsqlDataSource dataSource, string? partner, string? q, string? limit, string? cursor, CancellationToken ct)
    {
        var ws = RawPath.Segment(context, 2);
        if (!RawPath.IsWorkspaceId(ws))
        {
            return RawPath.BadRequest("workspace_id must match [a-z0-9][a-z0-9-]{0,62}");
        }

        if (!PageLimit.TryParse(limit, 500, 50, out var take))
        {
            return RawPath.BadRequest(PageLimit.Invalid(500));
        }

        long after = 0;
        if (!string.IsNullOrEmpty(cursor) && !Cursor.TryDecode(cursor, out after))
        {
            return RawPath.BadRequest("cursor is not a cursor this API returned");
        }

        if ((q is not null && !PostgresText.CanStore(q)) || (partner is not null && !PostgresText.CanStore(partner)))
        {
            // No name, cohort_id or partner holds U+0000 (and PostgreSQL cannot compare text with it): nothing matches.
            return TypedResults.Ok(new CohortPage([], null));
        }

        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var rows = await CohortQueries.SearchAsync(
            conn, ws, string.IsNullOrEmpty(partner) ? null : partner, string.IsNullOrEmpty(q) ? null : q, after, take + 1, ct);
        var next = rows.Count > take ? Cursor.Encode(rows[take - 1].Id) : null;
        return TypedResults.Ok(new CohortPage([.. rows.Take(take).Select(ToSummary)], next));
    }

    private static async Task<IResult> Detail(HttpContext context, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        var ws = RawPath.Segment(context, 2);
        var partner = RawPath.Segment(context, 4);
        var cohortId = RawPath.Segment(context, 5);
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var row = await CohortQueries.GetAsync(conn, null, ws, partner, cohortId, ct);
        if (row is null)
        {
            return RawPath.NotFound("No such cohort in this workspace.");
        }

        var imports = await ImportRepository.RecentForCohortAsync(conn, row.Id, RecentImports, ct);
        return TypedResults.Ok(new CohortDetail(
            row.CohortId, row.Partner, row.Name, row.MemberCount, row.Version, row.Archived, row.CreatedAt, row.UpdatedAt,
            [.. imports.Select(ImportStatusResponse.From)]));
    }

    private static CohortSummary ToSummary(CohortListRow r) => new(
        r.CohortId, r.Partner, r.Name, r.MemberCount, r.Version, r.CreatedAt, r.UpdatedAt,
        r.LastImportId is { } id
            ? new LastImport(id, r.LastImportStatus ?? "", r.LastImportReceived ?? 0, r.LastImportMatched ?? 0,
                MatchRate(r.LastImportReceived ?? 0, r.LastImportMatched ?? 0), r.LastImportAcceptedAt, r.LastImportCompletedAt)
            : null);

    public static double? MatchRate(long received, long matched) =>
        received == 0 ? null : Math.Round((double)matched / received, 4);

    public sealed record CohortPage(List<CohortSummary> Items, string? NextCursor);

    public sealed record CohortSummary(
        string CohortId, string Partner, string Name, long MemberCount, long Version, DateTimeOffset CreatedAt,
        DateTimeOffset UpdatedAt, LastImport? LastImport);

    public sealed record LastImport(
        Guid ImportId, string Status, long Received, long Matched, double? MatchRate, DateTimeOffset? AcceptedAt,
        DateTimeOffset? CompletedAt);

    public sealed record CohortDetail(
        string CohortId, string Partner, string Name, long MemberCount, long Version, bool Archived, DateTimeOffset CreatedAt,
        DateTimeOffset UpdatedAt, List<ImportStatusResponse> RecentImports);

    /// <summary>Opaque page cursor: base64url of the last cohort key seen.</summary>
    private static class Cursor
    {
        public static string Encode(long id) =>
            Convert.ToBase64String(BitConverter.GetBytes(id)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

        public static bool TryDecode(string cursor, out long id)
        {
            id = 0;
            try
            {
                var s = cursor.Replace('-', '+').Replace('_', '/');
                var bytes = Convert.FromBase64String(s.PadRight(s.Length + ((4 - (s.Length % 4)) % 4), '='));
                if (bytes.Length != 8)
                {
                    return false;
                }

                id = BitConverter.ToInt64(bytes);
                return id >= 0;
            }
            catch (FormatException)
            {
                return false;
            }
        }
    }
}

/// <summary>An import's status and statistics (the gateway's status endpoint relays it).</summary>
public sealed record ImportStatusResponse(
    Guid ImportId, string CohortId, string Partner, string Kind, string Status, long Received, long Matched, long Added,
    long Removed, Dictionary<string, long> Unmatched, string[] UnmatchedSample, long? CohortVersion, double? MatchRate,
    DateTimeOffset AcceptedAt, DateTimeOffset? CompletedAt, string? Error, long? Processed)
{
    public static ImportStatusResponse From(ImportRecord r) => new(
        r.ImportId, r.CohortId, r.Partner, r.Kind, r.Status, r.Received, r.Matched, r.Added, r.Removed,
        JsonSerializer.Deserialize<Dictionary<string, long>>(r.Unmatched, PlatformJson.Options) ?? [],
        r.UnmatchedSample, r.CohortVersion, CohortEndpoints.MatchRate(r.Received, r.Matched), r.AcceptedAt, r.CompletedAt,
        r.Error, r.Processed);
}
