using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dapper;
using Npgsql;

namespace CohortBridge.Benchmarks;

/// <summary>The platform's public and admin HTTP APIs as the benchmark drives them (shared/API.md).</summary>
internal sealed class PlatformClient : IDisposable
{
    private readonly Settings _settings;
    private readonly HttpClient _gateway;
    private readonly HttpClient _keys;
    private readonly HttpClient _cohorts;
    private readonly HttpClient _segments;

    public PlatformClient(Settings settings)
    {
        _settings = settings;
        var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 256, PooledConnectionLifetime = TimeSpan.FromMinutes(10) };
        _gateway = Client(handler, settings.Gateway, admin: false);
        _keys = Client(handler, settings.Keys, admin: true);
        _cohorts = Client(handler, settings.Cohorts, admin: true);
        _segments = Client(handler, settings.Segments, admin: true);
    }

    public string Workspace { get; private set; } = "";
    public string Partner { get; private set; } = "";
    public string PartnerApiKey { get; private set; } = "";
    public string ClientSecret { get; private set; } = "";

    private HttpClient Client(HttpMessageHandler handler, string baseUrl, bool admin)
    {
        var c = new HttpClient(handler, disposeHandler: false) { BaseAddress = new Uri(baseUrl), Timeout = TimeSpan.FromMinutes(30) };
        if (admin)
        {
            c.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", _settings.AdminToken);
        }

        return c;
    }

    public async Task EnsureReadyAsync()
    {
        foreach (var (name, client) in new[] { ("gateway", _gateway), ("keys", _keys), ("cohorts", _cohorts), ("segments", _segments) })
        {
            try
            {
                using var r = await client.GetAsync("health/ready");
                if (!r.IsSuccessStatusCode)
                {
                    throw new InvalidOperationException($"{name} at {client.BaseAddress} is not ready ({(int)r.StatusCode}). Run `make up` first.");
                }
            }
            catch (HttpRequestException e)
            {
                throw new InvalidOperationException($"{name} at {client.BaseAddress} does not answer. Run `make up` first.", e);
            }
        }
    }

    /// <summary>
    /// Waits until the broker holds no message in any queue (ready or being processed) and PostgreSQL runs no autovacuum
    /// worker, twice in a row, so the next timed figure (and its baseline alike) starts on a quiet platform: after 10M
    /// users or members were written, autovacuum and SegmentService's intake kept a core busy for minutes. Prints how
    /// long it waited. Without the management API it only waits for autovacuum.
    /// </summary>
    public async Task WaitForQuietAsync(TimeSpan timeout)
    {
        const string vacuuming = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'";
        var api = new Uri(_settings.BrokerApi);
        using var client = new HttpClient { BaseAddress = new Uri(api.GetLeftPart(UriPartial.Authority) + api.AbsolutePath) };
        if (api.UserInfo.Split(':') is [var user, var password])
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
                "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{Uri.UnescapeDataString(user)}:{Uri.UnescapeDataString(password)}")));
        }

        await using var db = new NpgsqlConnection(_settings.Postgres);
        await db.OpenAsync();
        var sw = Stopwatch.StartNew();
        var quiet = 0;
        var brokerApi = true;
        while (quiet < 2 && sw.Elapsed < timeout)
        {
            long pending = 0;
            if (brokerApi)
            {
                try
                {
                    var queues = await client.GetFromJsonAsync<JsonArray>("api/queues?columns=name,messages");
                    pending = queues?.Sum(q => q?["messages"]?.GetValue<long>() ?? 0) ?? 0;
                }
                catch (HttpRequestException e)
                {
                    Console.WriteLine($"  (broker API {api.Host}:{api.Port} unavailable, not waiting for empty queues: {e.Message})");
                    brokerApi = false;
                }
            }

            pending += await db.ExecuteScalarAsync<long>(vacuuming);
            quiet = pending == 0 ? quiet + 1 : 0;
            await Task.Delay(TimeSpan.FromMilliseconds(500));
        }

        if (sw.Elapsed > TimeSpan.FromSeconds(2))
        {
            Console.WriteLine($"  (waited {sw.Elapsed.TotalSeconds:F0} s for a quiet platform)");
        }
    }

    /// <summary>A fresh partner, workspace and data import key for this run.</summary>
    public async Task CreateTenantAsync()
    {
        var suffix = DateTime.UtcNow.ToString("MMddHHmmss", System.Globalization.CultureInfo.InvariantCulture);
        Partner = $"bench{suffix}";
        Workspace = $"bench-{suffix}";
        var partner = await PostJsonAsync(_keys, "admin/partners", new { partner = Partner, display_name = "Benchmark partner" });
        PartnerApiKey = partner["partner_api_key"]!.GetValue<string>();
        await PostJsonAsync(_keys, "admin/workspaces", new { workspace_id = Workspace, name = "Benchmark workspace" });
        var key = await PostJsonAsync(_keys, $"admin/workspaces/{Workspace}/partners/{Partner}/import-keys", new { });
        ClientSecret = key["client_secret"]!.GetValue<string>();
    }

    /// <summary>Uploads profiles through the bulk NDJSON endpoint, in requests of <paramref name="linesPerRequest"/>.</summary>
    public async Task UploadUsersAsync(IEnumerable<int> users, Action<StringBuilder, int> write, int linesPerRequest = 250_000)
    {
        var sb = new StringBuilder();
        var n = 0;
        foreach (var i in users)
        {
            write(sb, i);
            if (++n == linesPerRequest)
            {
                await PostUsersAsync(sb.ToString());
                sb.Clear();
                n = 0;
            }
        }

        if (n > 0)
        {
            await PostUsersAsync(sb.ToString());
        }
    }

    private async Task PostUsersAsync(string ndjson)
    {
        using var content = new StringContent(ndjson, Encoding.UTF8, "application/x-ndjson");
        using var r = await _cohorts.PostAsync($"admin/workspaces/{Workspace}/users:bulk", content);
        var body = await r.Content.ReadAsStringAsync();
        if (!r.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"users:bulk answered {(int)r.StatusCode}: {Truncate(body)}");
        }

        var result = JsonNode.Parse(body)!;
        if (result["rejected"]?.GetValue<long>() is > 0)
        {
            throw new InvalidOperationException($"users:bulk rejected profiles: {Truncate(body)}");
        }
    }

    /// <summary>Streams a full snapshot (NDJSON) and returns the import id.</summary>
    public async Task<string> PutSnapshotAsync(string cohortId, IEnumerable<string> lines)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, $"partners/{Partner}/cohorts/{Uri.EscapeDataString(cohortId)}/members")
        {
            Content = new NdjsonStreamContent(lines),
        };
        PartnerHeaders(request);
        using var r = await _gateway.SendAsync(request, HttpCompletionOption.ResponseContentRead);
        var body = await r.Content.ReadAsStringAsync();
        if (r.StatusCode != HttpStatusCode.Accepted)
        {
            throw new InvalidOperationException($"snapshot answered {(int)r.StatusCode}: {Truncate(body)}");
        }

        return JsonNode.Parse(body)!["import_id"]!.GetValue<string>();
    }

    /// <summary>One compatible-API change request; returns the import id.</summary>
    public Task<string> PostChangesAsync(string cohortId, IReadOnlyList<string> externalIds, bool remove = false) =>
        PostChangesAsync(ChangesBody(cohortId, externalIds, remove));

    /// <summary>
    /// The body of one compatible-API change request. The diff figure builds its bodies before timing starts: the
    /// client shares the two cores with the platform, and encoding them while timed cost about 1 µs of CPU per
    /// identifier (the client's share went from 3.0-3.7 to 2.4-2.6 µs per identifier), which the platform's figure
    /// should not pay.
    /// </summary>
    public byte[] ChangesBody(string cohortId, IReadOnlyList<string> externalIds, bool remove = false) =>
        JsonSerializer.SerializeToUtf8Bytes(new
        {
            partner_api_key = PartnerApiKey,
            client_secret = ClientSecret,
            cohort_id = cohortId,
            cohort_changes = new[] { new { user_ids = externalIds, device_ids = Array.Empty<string>(), aliases = Array.Empty<object>(), should_remove = remove } },
        });

    /// <summary>Sends a body from <see cref="ChangesBody"/>; returns the import id.</summary>
    public async Task<string> PostChangesAsync(byte[] changesBody)
    {
        for (var attempt = 0; ; attempt++)
        {
            using var content = new ByteArrayContent(changesBody);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var r = await _gateway.PostAsync($"partners/{Partner}/cohorts/users", content);
            var body = await r.Content.ReadAsStringAsync();
            if (r.StatusCode == HttpStatusCode.Accepted)
            {
                return JsonNode.Parse(body)!["import_id"]!.GetValue<string>();
            }

            if ((r.StatusCode == HttpStatusCode.TooManyRequests || r.StatusCode == HttpStatusCode.ServiceUnavailable) && attempt < 20)
            {
                await Task.Delay(r.Headers.RetryAfter?.Delta ?? TimeSpan.FromMilliseconds(200));
                continue;
            }

            throw new InvalidOperationException($"cohorts/users answered {(int)r.StatusCode}: {Truncate(body)}");
        }
    }

    public async Task<JsonNode> ImportStatusAsync(string importId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"partners/{Partner}/imports/{importId}");
        PartnerHeaders(request);
        using var r = await _gateway.SendAsync(request);
        var body = await r.Content.ReadAsStringAsync();
        return r.IsSuccessStatusCode ? JsonNode.Parse(body)! : throw new InvalidOperationException($"import status {(int)r.StatusCode}: {Truncate(body)}");
    }

    /// <summary>Polls the import until it is completed (or failed) and returns its final status.</summary>
    public async Task<JsonNode> WaitForImportAsync(string importId, TimeSpan timeout, TimeSpan? poll = null)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var status = await ImportStatusAsync(importId);
            var s = status["status"]?.GetValue<string>();
            if (s == "completed")
            {
                return status;
            }

            if (s == "failed")
            {
                throw new InvalidOperationException($"import {importId} failed: {status["error"]}");
            }

            if (sw.Elapsed > timeout)
            {
                throw new TimeoutException($"import {importId} not completed after {timeout}: {status.ToJsonString()}");
            }

            await Task.Delay(poll ?? TimeSpan.FromMilliseconds(100));
        }
    }

    /// <summary>Creates a segment; null while SegmentService does not know one of its cohorts yet (400).</summary>
    public async Task<string?> TryCreateSegmentAsync(string name, object filter)
    {
        using var r = await _segments.PostAsJsonAsync($"admin/workspaces/{Workspace}/segments", new { name, filter });
        var body = await r.Content.ReadAsStringAsync();
        if (r.StatusCode == HttpStatusCode.BadRequest)
        {
            return null;
        }

        return r.IsSuccessStatusCode
            ? JsonNode.Parse(body)!["segment_id"]!.GetValue<string>()
            : throw new InvalidOperationException($"create segment answered {(int)r.StatusCode}: {Truncate(body)}");
    }

    public async Task<long> SegmentSizeAsync(string segmentId)
    {
        using var r = await _segments.GetAsync($"workspaces/{Workspace}/segments/{segmentId}/size");
        var body = await r.Content.ReadAsStringAsync();
        return r.IsSuccessStatusCode
            ? JsonNode.Parse(body)!["size"]!.GetValue<long>()
            : throw new InvalidOperationException($"segment size {(int)r.StatusCode}: {Truncate(body)}");
    }

    /// <summary>
    /// SegmentService's process CPU time (user and system) from its Prometheus endpoint, or null when the endpoint does
    /// not expose <c>dotnet_process_cpu_time_seconds_total</c> (for example when metrics are served on another port).
    /// </summary>
    public async Task<double?> SegmentServiceCpuSecondsAsync()
    {
        using var r = await _segments.GetAsync("metrics");
        if (!r.IsSuccessStatusCode)
        {
            return null;
        }

        double? total = null;
        foreach (var line in (await r.Content.ReadAsStringAsync()).Split('\n'))
        {
            if (line.StartsWith("dotnet_process_cpu_time_seconds_total{", StringComparison.Ordinal)
                && double.TryParse(line[(line.LastIndexOf(' ') + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds))
            {
                total = (total ?? 0) + seconds;
            }
        }

        return total;
    }

    /// <summary>A cohort's member ordinals from CohortService's internal API (little-endian int32, ascending).</summary>
    public async Task<int[]> CohortOrdinalsAsync(string cohortId)
    {
        var bytes = await _cohorts.GetByteArrayAsync($"internal/workspaces/{Workspace}/cohorts/{Partner}/{Uri.EscapeDataString(cohortId)}/members");
        var ordinals = new int[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, ordinals, 0, ordinals.Length * 4);
        return ordinals;
    }

    private void PartnerHeaders(HttpRequestMessage request)
    {
        request.Headers.Add("X-Partner-Api-Key", PartnerApiKey);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ClientSecret);
    }

    private static async Task<JsonNode> PostJsonAsync(HttpClient client, string path, object body)
    {
        using var r = await client.PostAsJsonAsync(path, body);
        var text = await r.Content.ReadAsStringAsync();
        if (!r.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"POST {client.BaseAddress}{path} answered {(int)r.StatusCode}: {Truncate(text)}");
        }

        return JsonNode.Parse(text.Length == 0 ? "{}" : text)!;
    }

    private static string Truncate(string s) => s.Length > 400 ? s[..400] + "…" : s;

    public void Dispose()
    {
        _gateway.Dispose();
        _keys.Dispose();
        _cohorts.Dispose();
        _segments.Dispose();
    }

    /// <summary>Streams NDJSON lines without building the whole body in memory (chunked transfer).</summary>
    private sealed class NdjsonStreamContent : HttpContent
    {
        private readonly IEnumerable<string> _lines;

        public NdjsonStreamContent(IEnumerable<string> lines)
        {
            _lines = lines;
            Headers.ContentType = new MediaTypeHeaderValue("application/x-ndjson");
        }

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var buffer = new StringBuilder(1 << 20);
            foreach (var line in _lines)
            {
                buffer.Append(line).Append('\n');
                if (buffer.Length >= 1 << 20)
                {
                    var bytes = Encoding.UTF8.GetBytes(buffer.ToString());
                    await stream.WriteAsync(bytes);
                    buffer.Clear();
                }
            }

            if (buffer.Length > 0)
            {
                await stream.WriteAsync(Encoding.UTF8.GetBytes(buffer.ToString()));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }
}
