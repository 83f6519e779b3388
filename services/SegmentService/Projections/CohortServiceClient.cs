using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Filters;
using CohortBridge.ServiceDefaults;
using Microsoft.Extensions.Options;

namespace CohortBridge.SegmentService.Projections;

/// <summary>One line of <c>GET /internal/cohorts</c>.</summary>
public sealed record CohortSummary(
    string WorkspaceId, string Partner, string CohortId, string Name, long Version, bool Archived, long MemberCount);

/// <summary>The body of <c>GET .../changes?after=v</c>.</summary>
public sealed record CohortChanges(long CurrentVersion, bool Complete, IReadOnlyList<CohortChangeItem> Items);

public sealed record CohortChangeItem(long Version, string Name, bool Archived, IReadOnlyList<int> Added, IReadOnlyList<int> Removed);

/// <summary>A whole cohort read from CohortService.</summary>
public sealed record CohortMembers(long Version, bool Archived, RoaringBitmap Members);

/// <summary>
/// CohortService's internal API for projections (brief, cross-service contract 3). Paths carry partner and cohort id
/// URL-encoded (a cohort id may hold '/', spaces, unicode).
/// </summary>
/// <remarks>A singleton that takes a fresh client from the factory per call, so handler rotation (DNS) keeps working.</remarks>
public sealed class CohortServiceClient(IHttpClientFactory httpClientFactory, IOptions<SegmentsOptions> options)
{
    public const string HttpClientName = "CohortService";

    public bool IsConfigured
    {
        get
        {
            using var http = Http();
            return http.BaseAddress is not null;
        }
    }

    public async IAsyncEnumerable<CohortSummary> ListCohortsAsync([EnumeratorCancellation] CancellationToken ct)
    {
        using var http = Http();
        using var response = await http.GetAsync("internal/cohorts", HttpCompletionOption.ResponseHeadersRead, ct);
        response.EnsureSuccessStatusCode();
        await using var stream = await response.Content.ReadAsStreamAsync(ct);
        await foreach (var item in ReadNdjson<CohortSummary>(stream, ct))
        {
            yield return item;
        }
    }

    public async Task<IReadOnlyList<string>> ListWorkspacesAsync(CancellationToken ct)
    {
        using var http = Http();
        var body = await http.GetFromJsonAsync<WorkspaceList>("internal/workspaces", PlatformJson.Options, ct);
        return body?.Items ?? [];
    }

    /// <summary>Reads the member ordinals (little-endian int32, ascending) into a bitmap; null when 404.</summary>
    public async Task<CohortMembers?> GetMembersAsync(string workspaceId, CohortKey cohort, CancellationToken ct)
    {
        using var http = Http();
        using var response = await http.GetAsync(CohortPath(workspaceId, cohort) + "/members", HttpCompletionOption.ResponseHeadersRead, ct);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }

        response.EnsureSuccessStatusCode();
        var version = long.Parse(Header(response, "X-Cohort-Version"), CultureInfo.InvariantCulture);
        var archived = bool.Parse(Header(response, "X-Cohort-Archived"));
        var bitmap = new RoaringBitmap();
        await using var stream = await response.Content.ReadAsStreamAsync(ct);
        var buffer = new byte[64 * 1024];
        var ordinals = new int[buffer.Length / 4];
        var filled = 0;
        int read;
        while ((read = await stream.ReadAsync(buffer.AsMemory(filled), ct)) > 0)
        {
            filled += read;
            var whole = filled / 4;
            for (var i = 0; i < whole; i++)
            {
                ordinals[i] = BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(i * 4));
            }

            bitmap.AddMany(ordinals.AsSpan(0, whole));
            var rest = filled - whole * 4;
            buffer.AsSpan(whole * 4, rest).CopyTo(buffer);
            filled = rest;
        }

        if (filled != 0)
        {
            throw new InvalidDataException("Member stream length is not a multiple of 4 bytes.");
        }

        return new CohortMembers(version, archived, bitmap);
    }

    public async Task<CohortChanges?> GetChangesAsync(string workspaceId, CohortKey cohort, long after, CancellationToken ct)
    {
        using var http = Http();
        using var response = await http.GetAsync(
            CohortPath(workspaceId, cohort) + "/changes?after=" + after.ToString(CultureInfo.InvariantCulture), ct);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }

        response.EnsureSuccessStatusCode();
        return await response.Content.ReadFromJsonAsync<CohortChanges>(PlatformJson.Options, ct);
    }

    public async IAsyncEnumerable<VersionedUser> GetDirectoryAsync(string workspaceId, [EnumeratorCancellation] CancellationToken ct)
    {
        using var http = Http();
        using var response = await http.GetAsync(
            $"internal/workspaces/{Uri.EscapeDataString(workspaceId)}/directory", HttpCompletionOption.ResponseHeadersRead, ct);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            yield break;
        }

        response.EnsureSuccessStatusCode();

        // The directory version read before the users (none from a CohortService before versions: 0, unknown).
        long version = 0;
        if (response.Headers.TryGetValues("X-Directory-Version", out var values)
            && !long.TryParse(values.First(), NumberStyles.None, CultureInfo.InvariantCulture, out version))
        {
            throw new InvalidDataException($"CohortService sent an invalid X-Directory-Version: '{values.First()}'.");
        }

        var idleTimeout = TimeSpan.FromSeconds(options.Value.DirectoryReadIdleSeconds);
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        idle.CancelAfter(idleTimeout);
        await using var stream = await response.Content.ReadAsStreamAsync(idle.Token);
        await using var users = ReadNdjson<DirectoryUser>(stream, idle.Token).GetAsyncEnumerator(idle.Token);
        for (var read = 1; ; read++)
        {
            bool more;
            try
            {
                more = await users.MoveNextAsync();
            }
            catch (OperationCanceledException) when (idle.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                throw new TimeoutException(
                    $"CohortService sent nothing of workspace '{workspaceId}''s directory for {idleTimeout.TotalSeconds:0} s (Segments:DirectoryReadIdleSeconds).");
            }

            if (!more)
            {
                yield break;
            }

            if (read % 1024 == 0)
            {
                idle.CancelAfter(idleTimeout);
            }

            yield return new VersionedUser(users.Current, version);
        }
    }

    private HttpClient Http() => httpClientFactory.CreateClient(HttpClientName);

    private static string CohortPath(string workspaceId, CohortKey cohort) =>
        $"internal/workspaces/{Uri.EscapeDataString(workspaceId)}/cohorts/{Uri.EscapeDataString(cohort.Partner)}/{Uri.EscapeDataString(cohort.CohortId)}";

    private static string Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.First()
        : throw new InvalidDataException($"CohortService did not send {name}.");

    private static async IAsyncEnumerable<T> ReadNdjson<T>(Stream stream, [EnumeratorCancellation] CancellationToken ct)
    {
        using var reader = new StreamReader(stream);
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.Length == 0)
            {
                continue;
            }

            var item = JsonSerializer.Deserialize<T>(line, PlatformJson.Options);
            if (item is not null)
            {
                yield return item;
            }
        }
    }

    private sealed record WorkspaceList(IReadOnlyList<string> Items);
}
