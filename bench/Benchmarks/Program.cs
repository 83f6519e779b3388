using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using CohortBridge.Benchmarks;

// make bench: measures a running platform (make up) on a synthetic workspace and prints one table.
// Figures go to artifacts/bench.json too (flat object, numbers only, units in the key names).
var settings = new Settings();
var figures = new Dictionary<string, double>();
var rows = new List<(string What, string Value, string Note)>();
void Row(string what, string value, string note = "") { rows.Add((what, value, note)); Console.WriteLine($"  {what}: {value} {note}"); }
string F(double v, string format = "N0") => v.ToString(format, CultureInfo.InvariantCulture);

using var platform = new PlatformClient(settings);
// Each timed figure starts once the previous step's asynchronous work is done (broker queues empty, no autovacuum).
Task Quiet() => platform.WaitForQuietAsync(TimeSpan.FromMinutes(15));
await platform.EnsureReadyAsync();
await platform.CreateTenantAsync();
var n = settings.Users;
figures["users"] = n;
Console.WriteLine($"CohortBridge benchmark: {n:N0} users, workspace {platform.Workspace}, {Environment.ProcessorCount} cores");

// 1. The user directory (setup; reported for orientation).
var sw = Stopwatch.StartNew();
await platform.UploadUsersAsync(Enumerable.Range(0, n), SyntheticWorkspace.WriteProfile);
await platform.UploadUsersAsync(Enumerable.Range(0, n).Where(SyntheticWorkspace.IdentifiedLater), SyntheticWorkspace.WriteIdentification);
var directorySeconds = sw.Elapsed.TotalSeconds;
figures["directory_upsert_users_per_second"] = Math.Round(n / directorySeconds);
Row("directory upsert", $"{F(n / directorySeconds)} users/s", $"({F(directorySeconds, "F1")} s)");

// 2. Physical baseline set-up on the same PostgreSQL (not timed).
await using var baseline = new PhysicalBaseline(settings);
await baseline.SetUpAsync(n);

// 3. Snapshot import of every user: first byte to `completed`.
await Quiet();
sw.Restart();
var snapshotImport = await platform.PutSnapshotAsync("bench-all", Enumerable.Range(0, n).Select(SyntheticWorkspace.SnapshotLine));
var snapshotStatus = await platform.WaitForImportAsync(snapshotImport, TimeSpan.FromMinutes(30), TimeSpan.FromMilliseconds(250));
var snapshotSeconds = sw.Elapsed.TotalSeconds;
var snapshotMatched = snapshotStatus["matched"]!.GetValue<long>();
if (snapshotMatched != n)
{
    throw new InvalidOperationException($"snapshot matched {snapshotMatched} of {n} users");
}

await Quiet();
var snapshotBaseline = await baseline.ImportAsync(Enumerable.Range(0, n));
figures["snapshot_10m_seconds"] = Math.Round(snapshotSeconds, 2);
figures["snapshot_baseline_seconds"] = Math.Round(snapshotBaseline, 2);
figures["snapshot_vs_baseline_ratio"] = Math.Round(snapshotBaseline / snapshotSeconds, 3);
Row("snapshot import", $"{F(snapshotSeconds, "F1")} s, {F(n / snapshotSeconds)} ids/s", $"(baseline {F(snapshotBaseline, "F1")} s; ratio {F(snapshotBaseline / snapshotSeconds, "F2")}, target >= 0.7)");

// 4. Diff path: 1,000-identifier requests from concurrent clients into one cohort.
// Sends the bodies from DiffClients concurrent clients and waits until each client's last import completed.
async Task SendConcurrentlyAsync(byte[][] requestBodies, ConcurrentBag<double> requestLatencies)
{
    var lastImports = new ConcurrentBag<string>();
    var next = -1;
    await Task.WhenAll(Enumerable.Range(0, settings.DiffClients).Select(async _ =>
    {
        string? last = null;
        int k;
        while ((k = Interlocked.Increment(ref next)) < requestBodies.Length)
        {
            var t = Stopwatch.StartNew();
            last = await platform.PostChangesAsync(requestBodies[k]);
            requestLatencies.Add(t.Elapsed.TotalMilliseconds);
        }

        if (last is not null)
        {
            lastImports.Add(last);
        }
    }));
    foreach (var id in lastImports)
    {
        await platform.WaitForImportAsync(id, TimeSpan.FromMinutes(30));
    }
}

byte[][] ChangesBodies(string cohortId, IEnumerable<int> users) => [.. users.Chunk(1000)
    .Select(batch => platform.ChangesBody(cohortId, [.. batch.Select(i => "u" + i.ToString(CultureInfo.InvariantCulture))]))];

var identified = SyntheticWorkspace.IdentifiedUsers(n).ToArray();
var diffUsers = identified.Take(Math.Min(settings.DiffIdentifiers, identified.Length)).ToArray();
var bodies = ChangesBodies("bench-diff", diffUsers);

// Untimed warm-up into another cohort with other users (from the end of the directory): the services' code paths
// and PostgreSQL connections of the diff path have not run yet at this point (the snapshot takes other ones), and a
// first cold pass measured 48-59k ids/s against 76-83k for the same pass repeated.
var warmUpUsers = identified.Skip(diffUsers.Length).TakeLast(Math.Min(settings.DiffWarmUpIdentifiers, identified.Length - diffUsers.Length));
var warmUpBodies = ChangesBodies("bench-diff-warm-up", warmUpUsers);
if (warmUpBodies.Length > 0)
{
    await Quiet();
    var warmUp = Stopwatch.StartNew();
    await SendConcurrentlyAsync(warmUpBodies, []);
    Console.WriteLine($"  (diff warm-up: {F(warmUpBodies.Length)} requests into another cohort in {F(warmUp.Elapsed.TotalSeconds, "F1")} s, not timed)");
}

var latencies = new ConcurrentBag<double>();
await Quiet();
sw.Restart();
await SendConcurrentlyAsync(bodies, latencies);
var diffSeconds = sw.Elapsed.TotalSeconds;
var diffIdsPerSecond = diffUsers.Length / diffSeconds;
await Quiet();
var diffBaselineSeconds = await baseline.ImportAsync(diffUsers);
var baselineIdsPerSecond = diffUsers.Length / diffBaselineSeconds;
figures["diff_ids_per_second"] = Math.Round(diffIdsPerSecond);
figures["baseline_ids_per_second"] = Math.Round(baselineIdsPerSecond);
figures["diff_vs_baseline_ratio"] = Math.Round(diffIdsPerSecond / baselineIdsPerSecond, 3);
figures["diff_request_p50_ms"] = Math.Round(Stats.Median(latencies.ToArray()), 2);
figures["diff_request_p99_ms"] = Math.Round(Stats.Percentile(latencies.ToArray(), 99), 2);
Row("diff import", $"{F(diffIdsPerSecond)} ids/s", $"({F(diffUsers.Length)} ids, {settings.DiffClients} clients; baseline {F(baselineIdsPerSecond)} ids/s; ratio {F(diffIdsPerSecond / baselineIdsPerSecond, "F2")}, target >= 0.5 and >= 100,000/s)");
Row("diff request latency", $"p50 {F(figures["diff_request_p50_ms"], "F1")} ms, p99 {F(figures["diff_request_p99_ms"], "F1")} ms");

// 5. Evaluation cohorts: A = half of the users (5M at 10M), B = the diff cohort (1M), C = a thousandth (10k).
var halfImport = await platform.PutSnapshotAsync("bench-half", Enumerable.Range(0, n).Where(i => i % 2 == 0).Select(SyntheticWorkspace.SnapshotLine));
var smallImport = await platform.PutSnapshotAsync("bench-small", Enumerable.Range(0, n).Where(i => i % 1000 == 7).Select(SyntheticWorkspace.SnapshotLine));
await platform.WaitForImportAsync(halfImport, TimeSpan.FromMinutes(30), TimeSpan.FromMilliseconds(250));
await platform.WaitForImportAsync(smallImport, TimeSpan.FromMinutes(30), TimeSpan.FromMilliseconds(250));
object Cohort(string id, string op) => new { cohort = new { partner = platform.Partner, cohort_id = id }, op };
var filter = new { and = new object[] { Cohort("bench-half", "includes"), new { or = new object[] { Cohort("bench-diff", "includes"), Cohort("bench-small", "excludes") } } } };
var segment = await Eventually(() => platform.TryCreateSegmentAsync("bench three cohorts", filter), id => id is not null, TimeSpan.FromMinutes(2)) ?? "";

var a = await platform.CohortOrdinalsAsync("bench-half");
var b = await platform.CohortOrdinalsAsync("bench-diff");
var c = await platform.CohortOrdinalsAsync("bench-small");
var live = Enumerable.Range(0, n).ToArray();
var inService = InServiceEvaluation.Measure(a, b, c, live);
await baseline.LoadCohortAsync(101, a);
await baseline.LoadCohortAsync(102, b);
await baseline.LoadCohortAsync(103, c);
var (sqlSize, sqlMs) = await baseline.EvaluateAsync(101, 102, 103);
var httpSize = await Eventually(() => platform.SegmentSizeAsync(segment), size => size == inService.Size, TimeSpan.FromMinutes(5));
if (sqlSize != inService.Size || httpSize != inService.Size)
{
    throw new InvalidOperationException($"segment sizes disagree: bitmap {inService.Size}, SQL {sqlSize}, service {httpSize}");
}

// As in process: the service's evaluator is timed once the JIT has tiered it up, as it is in a running service.
var httpWarmUp = Stopwatch.StartNew();
while (httpWarmUp.Elapsed < TimeSpan.FromSeconds(3))
{
    await platform.SegmentSizeAsync(segment);
}

var httpTimes = new List<double>();
for (var i = 0; i < 200; i++)
{
    var t = Stopwatch.StartNew();
    await platform.SegmentSizeAsync(segment);
    httpTimes.Add(t.Elapsed.TotalMilliseconds);
}

figures["segment_eval_ms"] = Math.Round(inService.CountMedianMs, 4);
figures["segment_members_eval_ms"] = Math.Round(inService.MembersMedianMs, 4);
figures["segment_eval_sql_ms"] = Math.Round(sqlMs, 2);
figures["segment_eval_speedup_ratio"] = Math.Round(sqlMs / inService.CountMedianMs);
figures["segment_size_http_p50_ms"] = Math.Round(Stats.Median(httpTimes), 3);
figures["projection_bytes_per_member"] = Math.Round(inService.BytesPerMember, 4);
Row("segment evaluation", $"{F(inService.CountMedianMs * 1000, "F0")} µs in process", $"(size {F(inService.Size)} counted as the size query does; SQL {F(sqlMs, "F0")} ms; speed-up x{F(sqlMs / inService.CountMedianMs)}; HTTP size call p50 {F(Stats.Median(httpTimes), "F2")} ms; target < 1 ms, >= x1,000)");
Row("segment member set", $"{F(inService.MembersMedianMs * 1000, "F0")} µs in process", "(the bitmap the member stream writes from)");
Row("projection size", $"{F(inService.BytesPerMember, "F3")} bytes/member", "(serialized bitmaps of the three cohorts; target <= 1)");

// 6. Membership checks over HTTP.
await Quiet();
var checkPath = $"/workspaces/{platform.Workspace}/segments/{segment}/members/check?external_id=u";
// Two seconds of the same load first, not counted: both sides' code paths are compiled and warm when timing starts.
RunChecks(TimeSpan.FromSeconds(2));
var serverCpuBefore = await platform.SegmentServiceCpuSecondsAsync();
var checkWatch = Stopwatch.StartNew();
var checks = RunChecks(TimeSpan.FromSeconds(settings.CheckSeconds));
var checkElapsed = checkWatch.Elapsed;
var serverCpuAfter = await platform.SegmentServiceCpuSecondsAsync();
figures["check_per_second"] = Math.Round(checks.Length / checkElapsed.TotalSeconds);
figures["check_p50_ms"] = Math.Round(Stats.Median(checks), 3);
figures["check_p99_ms"] = Math.Round(Stats.Percentile(checks, 99), 3);
// SegmentService's own CPU per check (its process CPU counter): what the figure costs the service, whatever the client.
var serverCpuNote = "";
if (serverCpuBefore is { } cpuBefore && serverCpuAfter is { } cpuAfter && checks.Length > 0)
{
    figures["check_server_cpu_us"] = Math.Round((cpuAfter - cpuBefore) * 1e6 / checks.Length, 1);
    serverCpuNote = $", SegmentService CPU {F(figures["check_server_cpu_us"], "F1")} µs per check";
}

Row("membership checks", $"{F(figures["check_per_second"])} /s", $"(p50 {F(figures["check_p50_ms"], "F2")} ms, p99 {F(figures["check_p99_ms"], "F2")} ms, {settings.CheckConcurrency} connections{serverCpuNote}; target >= 20,000/s, p99 < 5 ms)");

// 7. Freshness: from the 202 of a small import to the segment size changing.
await Quiet();
var freshUsers = SyntheticWorkspace.IdentifiedUsers(n).Take(settings.FreshnessSamples + 1).ToArray();
await platform.WaitForImportAsync(await platform.PostChangesAsync("bench-fresh", ["u" + freshUsers[0]]), TimeSpan.FromMinutes(1));
// SegmentService learns the new cohort from CohortUpdated; a segment naming it is accepted from then on.
var freshSegment = await Eventually(
    () => platform.TryCreateSegmentAsync("bench freshness", new { cohort = new { partner = platform.Partner, cohort_id = "bench-fresh" }, op = "includes" }),
    id => id is not null, TimeSpan.FromMinutes(1)) ?? "";
await Eventually(() => platform.SegmentSizeAsync(freshSegment), size => size == 1, TimeSpan.FromMinutes(1));
var freshness = new List<double>();
for (var s = 1; s <= settings.FreshnessSamples; s++)
{
    await platform.PostChangesAsync("bench-fresh", ["u" + freshUsers[s]]);
    var t = Stopwatch.StartNew();
    var expected = s + 1;
    await Eventually(() => platform.SegmentSizeAsync(freshSegment), size => size == expected, TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(2));
    freshness.Add(t.Elapsed.TotalMilliseconds);
}

figures["freshness_p50_ms"] = Math.Round(Stats.Median(freshness), 1);
figures["freshness_p99_ms"] = Math.Round(Stats.Percentile(freshness, 99), 1);
Row("freshness", $"p50 {F(figures["freshness_p50_ms"], "F0")} ms, p99 {F(figures["freshness_p99_ms"], "F0")} ms", "(202 → segment size changed; target p99 < 1 s)");

// The table and the JSON.
Console.WriteLine();
var w1 = rows.Max(r => r.What.Length);
var w2 = rows.Max(r => r.Value.Length);
Console.WriteLine($"| {"figure".PadRight(w1)} | {"value".PadRight(w2)} | note");
Console.WriteLine($"|{new string('-', w1 + 2)}|{new string('-', w2 + 2)}|------");
foreach (var (what, value, note) in rows)
{
    Console.WriteLine($"| {what.PadRight(w1)} | {value.PadRight(w2)} | {note}");
}

Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(settings.Output))!);
await File.WriteAllTextAsync(settings.Output, JsonSerializer.Serialize(figures, new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"\nfigures written to {settings.Output}");

// The connections are driven by one polling thread, as wrk does: the cheapest client on cores shared with the server.
double[] RunChecks(TimeSpan duration) => PolledHttpLoad.Run(
    new Uri(settings.Segments), settings.ServiceToken, settings.CheckConcurrency, duration,
    random => checkPath + random.Next(n).ToString(CultureInfo.InvariantCulture),
    answer => answer.Status == 200 && answer.Body.Contains("\"member\"", StringComparison.Ordinal));

static async Task<T> Eventually<T>(Func<Task<T>> probe, Func<T, bool> done, TimeSpan timeout, TimeSpan? poll = null)
{
    var sw = Stopwatch.StartNew();
    while (true)
    {
        var value = await probe();
        if (done(value))
        {
            return value;
        }

        if (sw.Elapsed > timeout)
        {
            throw new TimeoutException($"condition not met within {timeout}; last value {value}");
        }

        await Task.Delay(poll ?? TimeSpan.FromMilliseconds(20));
    }
}
