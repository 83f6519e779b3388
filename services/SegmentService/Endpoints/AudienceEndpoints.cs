using System.Buffers;
using System.Text;
using System.Text.Json;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Data;
using CohortBridge.SegmentService.Projections;
using CohortBridge.SegmentService.Segments;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace CohortBridge.SegmentService.Endpoints;

/// <summary>Times are UTC <see cref="DateTime"/>s so that they serialize with a 'Z' (API.md conventions).</summary>
public sealed record SizeResponse(long Size, DateTime EvaluatedAt);

public sealed record MembershipResponse(bool Member);

public sealed record EvaluateResponse(long Size, IReadOnlyList<JsonElement> Sample);

public sealed record CohortOption(string Partner, string CohortId, string Name, long MemberCount, long Version);

public sealed record CohortOptionList(IReadOnlyList<CohortOption> Items, string? NextCursor);

/// <summary>
/// Audience questions for campaign services under <c>/workspaces/{workspace_id}</c>. They require the service token
/// (or the admin token): API.md leaves their authentication open, and membership answers and member streams are
/// personal data, so campaign services present a bearer token, but one that opens no admin API.
/// </summary>
public static class AudienceEndpoints
{
    private const int StreamBatch = 4096;

    public static IEndpointRouteBuilder MapAudienceEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/workspaces/{workspaceId}").RequireServiceToken();
        group.MapGet("/segments/{segmentId}/size", SizeAsync);
        group.MapGet("/segments/{segmentId}/members/check", CheckAsync);
        group.MapGet("/segments/{segmentId}/members", StreamMembersAsync);
        group.MapPost("/audiences:evaluate", EvaluateAsync);
        group.MapGet("/cohorts", ListCohorts);
        return app;
    }

    private static async Task<Results<Ok<SizeResponse>, ProblemHttpResult>> SizeAsync(
        string workspaceId, string segmentId, SegmentLookup segments, AudienceQueries audiences, TimeProvider time,
        CancellationToken ct)
    {
        var (segment, problem) = await FindSegmentAsync(workspaceId, segmentId, segments, ct);
        if (problem is not null)
        {
            return problem;
        }

        var evaluatedAt = time.GetUtcNow().UtcDateTime;
        var size = audiences.Count(workspaceId, audiences.FilterOf(segment!), "size");
        return TypedResults.Ok(new SizeResponse(size, evaluatedAt));
    }

    private static async Task<Results<Ok<MembershipResponse>, ProblemHttpResult>> CheckAsync(
        string workspaceId, string segmentId, HttpRequest request, SegmentLookup segments, AudienceQueries audiences,
        CancellationToken ct)
    {
        var query = request.Query;
        var repeated = false;
        var externalId = Single("external_id");
        var deviceId = Single("device_id");
        var aliasName = Single("alias_name");
        var aliasLabel = Single("alias_label");
        var kinds = (externalId is not null ? 1 : 0) + (deviceId is not null ? 1 : 0) + (aliasName is not null || aliasLabel is not null ? 1 : 0);
        if (repeated || kinds != 1 || (aliasName is null) != (aliasLabel is null))
        {
            return Problems.BadRequest(
                "Invalid identifier",
                "Give exactly one identifier: external_id, device_id, or alias_name together with alias_label.");
        }

        if (new[] { externalId, deviceId, aliasName, aliasLabel }.Any(v => v is { Length: 0 or > 512 }))
        {
            return Problems.BadRequest("Invalid identifier", "An identifier must be a non-empty string of at most 512 characters.");
        }

        var (segment, problem) = await FindSegmentAsync(workspaceId, segmentId, segments, ct);
        if (problem is not null)
        {
            return problem;
        }

        var directory = audiences.Directory(workspaceId);
        var ordinal = directory is null ? null
            : externalId is not null ? directory.FindByExternalId(externalId)
            : deviceId is not null ? directory.FindByDeviceId(deviceId)
            : directory.FindByAlias(aliasName!, aliasLabel!);
        var member = ordinal is { } o && audiences.Contains(workspaceId, audiences.FilterOf(segment!), o);
        return TypedResults.Ok(new MembershipResponse(member));

        // A parameter given twice is two identifiers (ToString would join them with a comma and look that up).
        string? Single(string name)
        {
            if (!query.TryGetValue(name, out var values))
            {
                return null;
            }

            repeated |= values.Count > 1;
            return values.ToString();
        }
    }

    /// <summary>
    /// NDJSON, one line per member in ordinal order, written in batches straight from the bitmap (the member list is
    /// never materialised); stops when the client goes away.
    /// </summary>
    private static async Task<IResult> StreamMembersAsync(
        string workspaceId, string segmentId, HttpContext http, SegmentLookup segments, AudienceQueries audiences)
    {
        var ct = http.RequestAborted;
        var (segment, problem) = await FindSegmentAsync(workspaceId, segmentId, segments, ct);
        if (problem is not null)
        {
            return problem;
        }

        var members = audiences.Evaluate(workspaceId, audiences.FilterOf(segment!), "members");
        var directory = audiences.Directory(workspaceId) ?? new UserDirectory();
        http.Response.ContentType = "application/x-ndjson";
        try
        {
            await http.Response.StartAsync(ct);
            await WriteMembersAsync(members, directory, http.Response.Body, ct);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException && ct.IsCancellationRequested)
        {
            // The client went away: stop quietly, there is no one left to answer.
        }

        return Results.Empty;
    }

    private static async Task WriteMembersAsync(RoaringBitmap members, UserDirectory directory, Stream body, CancellationToken ct)
    {
        var ordinals = new int[StreamBatch];
        var identities = new MemberIdentity?[StreamBatch];
        var output = new ArrayBufferWriter<byte>(StreamBatch * 32);
        var next = 0;
        while (!ct.IsCancellationRequested)
        {
            var n = members.CopyTo(next, ordinals);
            if (n == 0)
            {
                break;
            }

            directory.Identify(ordinals.AsSpan(0, n), identities.AsSpan(0, n));
            output.ResetWrittenCount();
            for (var i = 0; i < n; i++)
            {
                if (identities[i] is { } identity)
                {
                    WriteIdentityLine(output, identity);
                }
            }

            await body.WriteAsync(output.WrittenMemory, ct);
            await body.FlushAsync(ct);
            if (ordinals[n - 1] == int.MaxValue)
            {
                break;
            }

            next = ordinals[n - 1] + 1;
        }
    }

    private static async Task<Results<Ok<EvaluateResponse>, ProblemHttpResult>> EvaluateAsync(
            string workspaceId, HttpRequest request, AudienceQueries audiences, IOptions<SegmentsOptions> options, CancellationToken ct)
        {
            if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
            {
                return invalid;
            }

            var (body, problem) = await RequestJson.ReadObjectAsync(request, ct);
            if (problem is not null)
            {
                return problem;
            }

            using (body)
            {
                if (!body!.RootElement.TryGetProperty("filter", out var filterElement))
                {
                    return Problems.BadRequest("Invalid filter", "filter is required.");
                }

                var (filter, filterProblem) = audiences.ParseAndValidate(workspaceId, filterElement);
                if (filterProblem is not null)
                {
                    return filterProblem;
                }

                var size = audiences.Count(workspaceId, filter!, "evaluate");
                var sampleSize = options.Value.SampleSize;
                var ordinals = new int[sampleSize];
                var identities = new MemberIdentity?[sampleSize];
                var n = audiences.CopyFirst(workspaceId, filter!, ordinals);
                audiences.Directory(workspaceId)?.Identify(ordinals.AsSpan(0, n), identities.AsSpan(0, n));
                var sample = new List<JsonElement>(n);
                var buffer = new ArrayBufferWriter<byte>();
                for (var i = 0; i < n; i++)
                {
                    if (identities[i] is { } identity)
                    {
                        buffer.ResetWrittenCount();
                        WriteIdentityLine(buffer, identity);
                        using var doc = JsonDocument.Parse(buffer.WrittenMemory);
                        sample.Add(doc.RootElement.Clone());
                    }
                }

                return TypedResults.Ok(new EvaluateResponse(size, sample));
            }
        }

        /// <summary>Cohort names for a filter dropdown: name or cohort_id contains q (case-insensitive); archived hidden.</summary>
        private static Results<Ok<CohortOptionList>, ProblemHttpResult> ListCohorts(
            string workspaceId, string? q, string? partner, string? limit, string? cursor, AudienceQueries audiences)
        {
            if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
            {
                return invalid;
            }

            if (!PageLimit.TryParse(limit, 500, 50, out var pageSize))
            {
                return Problems.BadRequest("Invalid limit", PageLimit.Invalid(500));
            }

            var offset = 0;
            if (!string.IsNullOrEmpty(cursor) && (!int.TryParse(DecodeCursor(cursor), out offset) || offset < 0))
            {
                return Problems.BadRequest("Invalid cursor", "cursor is not a value returned as next_cursor.");
            }

            var matching = audiences.Cohorts(workspaceId)
                .Where(c => !c.Archived)
                .Where(c => partner is null || c.Key.Partner == partner)
                .Where(c => string.IsNullOrEmpty(q)
                            || c.Name.Contains(q, StringComparison.OrdinalIgnoreCase)
                            || c.Key.CohortId.Contains(q, StringComparison.OrdinalIgnoreCase))
                .OrderBy(c => c.Name, StringComparer.OrdinalIgnoreCase)
                .ThenBy(c => c.Key.Partner, StringComparer.Ordinal)
                .ThenBy(c => c.Key.CohortId, StringComparer.Ordinal)
                .Skip(offset)
                .Take(pageSize + 1)
                .Select(c => new CohortOption(c.Key.Partner, c.Key.CohortId, c.Name, c.Members.Cardinality, c.Version))
                .ToList();
            var next = matching.Count > pageSize ? EncodeCursor(offset + pageSize) : null;
            return TypedResults.Ok(new CohortOptionList(matching.Take(pageSize).ToList(), next));
        }

        private static async Task<(Segment? Segment, ProblemHttpResult? Problem)> FindSegmentAsync(
            string workspaceId, string segmentId, SegmentLookup segments, CancellationToken ct)
        {
            if (Problems.InvalidWorkspace(workspaceId) is { } invalid)
            {
                return (null, invalid);
            }

            var segment = Guid.TryParse(segmentId, out var id) ? await segments.GetAsync(workspaceId, id, ct) : null;
            return segment is null ? (null, Problems.SegmentNotFound(workspaceId, segmentId)) : (segment, null);
        }

        private static void WriteIdentityLine(IBufferWriter<byte> output, MemberIdentity identity)
        {
            using (var writer = new Utf8JsonWriter(output))
            {
                writer.WriteStartObject();
                if (identity.ExternalId is not null)
                {
                    writer.WriteString("external_id", identity.ExternalId);
                }
                else if (identity.Alias is not null)
                {
                    writer.WriteString("alias_name", identity.Alias.AliasName);
                    writer.WriteString("alias_label", identity.Alias.AliasLabel);
                }
                else
                {
                    writer.WriteString("device_id", identity.DeviceId);
                }

                writer.WriteEndObject();
            }

            output.Write("\n"u8);
        }

        private static string EncodeCursor(int offset) =>
            Convert.ToBase64String(Encoding.UTF8.GetBytes("o:" + offset.ToString(System.Globalization.CultureInfo.InvariantCulture)));

        private static string? DecodeCursor(string cursor)
        {
            try
            {
                var text = Encoding.UTF8.GetString(Convert.FromBase64String(cursor));
                return text.StartsWith("o:", StringComparison.Ordinal) ? text[2..] : null;
            }
            catch (FormatException)
            {
                return null;
            }
        }
    }
