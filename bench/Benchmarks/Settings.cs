namespace CohortBridge.Benchmarks;

/// <summary>Where the running platform is, and how big the synthetic workspace is (environment variables).</summary>
internal sealed record Settings
{
    public int Users { get; init; } = Int("BENCH_USERS", 10_000_000);
    public string Gateway { get; init; } = Str("BENCH_GATEWAY_URL", "http://127.0.0.1:5080/");
    public string Keys { get; init; } = Str("BENCH_KEYS_URL", "http://127.0.0.1:5081/");
    public string Cohorts { get; init; } = Str("BENCH_COHORTS_URL", "http://127.0.0.1:5082/");
    public string Segments { get; init; } = Str("BENCH_SEGMENTS_URL", "http://127.0.0.1:5083/");
    public string AdminToken { get; init; } = Str("PLATFORM_ADMIN_TOKEN", "dev-admin-token");

    /// <summary>What campaign services present for membership checks.</summary>
    public string ServiceToken { get; init; } = Str("PLATFORM_SERVICE_TOKEN", "dev-service-token");

    /// <summary>The same PostgreSQL server the platform uses, for the physical baseline and the SQL comparison.</summary>
    public string Postgres { get; init; } = Str("BENCH_POSTGRES", "Host=127.0.0.1;Port=54329;Username=postgres;Database=postgres");

    /// <summary>
    /// RabbitMQ's management API (guest on the private broker of make up). Before each timed figure the benchmark waits
    /// until every queue is empty, so a figure does not also pay for the previous step's asynchronous work (for example
    /// SegmentService still taking in a 10M-user directory).
    /// </summary>
    public string BrokerApi { get; init; } = Str("BENCH_BROKER_API", "http://guest:guest@127.0.0.1:56731/");

    public int DiffIdentifiers { get; init; } = Int("BENCH_DIFF_IDS", 1_000_000);
    public int DiffClients { get; init; } = Int("BENCH_DIFF_CLIENTS", 8);

    /// <summary>Identifiers sent, untimed, into another cohort before the diff path is timed (0: no warm-up).</summary>
    public int DiffWarmUpIdentifiers { get; init; } = Int("BENCH_DIFF_WARMUP_IDS", 200_000, allowZero: true);
    public int FreshnessSamples { get; init; } = Int("BENCH_FRESHNESS_SAMPLES", 50);
    public int CheckSeconds { get; init; } = Int("BENCH_CHECK_SECONDS", 10);
    /// <summary>Concurrent membership-check connections (keep-alive, one request outstanding on each; see PolledHttpLoad).</summary>
    public int CheckConcurrency { get; init; } = Int("BENCH_CHECK_CONCURRENCY", 16);
    public string Output { get; init; } = Str("BENCH_OUTPUT", "artifacts/bench.json");

    private static int Int(string name, int fallback, bool allowZero = false) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out var v) && (v > 0 || (allowZero && v == 0)) ? v : fallback;

    private static string Str(string name, string fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : fallback;
}
