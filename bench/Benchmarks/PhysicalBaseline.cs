using System.Diagnostics;
using Dapper;
using Npgsql;
using NpgsqlTypes;

namespace CohortBridge.Benchmarks;

/// <summary>
/// The physical floor of an import, on the same PostgreSQL server, with no services in between: binary COPY of the
/// identifiers into a staging table, then one set-based match against the user table and insert into an indexed
/// membership table. End-to-end figures are reported as a ratio of this.
/// </summary>
internal sealed class PhysicalBaseline(Settings settings) : IAsyncDisposable
{
    private const string Database = "cohortbridge_bench_baseline";
    private NpgsqlDataSource? _db;
    private int _nextCohort;

    public async Task SetUpAsync(int users)
    {
        await using (var admin = new NpgsqlConnection(settings.Postgres))
        {
            await admin.OpenAsync();
            await admin.ExecuteAsync($"DROP DATABASE IF EXISTS {Database} WITH (FORCE)");
            await admin.ExecuteAsync($"CREATE DATABASE {Database}");
        }

        _db = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(settings.Postgres) { Database = Database }.ConnectionString);
        await using var conn = await _db.OpenConnectionAsync();
        await conn.ExecuteAsync("""
            CREATE TABLE users (ordinal int PRIMARY KEY, external_id text COLLATE "C", device_id text COLLATE "C", identified boolean NOT NULL);
            CREATE TABLE memberships (cohort int NOT NULL, ordinal int NOT NULL, PRIMARY KEY (cohort, ordinal));
            CREATE TABLE live_users (ordinal int PRIMARY KEY);
            """);
        await using (var importer = await conn.BeginBinaryImportAsync("COPY users (ordinal, external_id, device_id, identified) FROM STDIN (FORMAT BINARY)"))
        {
            for (var i = 0; i < users; i++)
            {
                var anonymous = SyntheticWorkspace.IsAnonymous(i);
                await importer.StartRowAsync();
                await importer.WriteAsync(i, NpgsqlDbType.Integer);
                if (anonymous)
                {
                    await importer.WriteNullAsync();
                }
                else
                {
                    await importer.WriteAsync("u" + i, NpgsqlDbType.Text);
                }

                if (anonymous || SyntheticWorkspace.IdentifiedLater(i))
                {
                    await importer.WriteAsync("d" + i, NpgsqlDbType.Text);
                }
                else
                {
                    await importer.WriteNullAsync();
                }

                await importer.WriteAsync(!anonymous, NpgsqlDbType.Boolean);
            }

            await importer.CompleteAsync();
        }

        await conn.ExecuteAsync("""
            CREATE UNIQUE INDEX ON users (external_id);
            CREATE UNIQUE INDEX ON users (device_id);
            INSERT INTO live_users SELECT ordinal FROM users;
            ANALYZE users; ANALYZE live_users;
            """, commandTimeout: 0);
    }

    /// <summary>COPY + match + insert of the identifiers (as a partner would send them); returns seconds.</summary>
    public async Task<double> ImportAsync(IEnumerable<int> users)
    {
        var cohort = ++_nextCohort;
        await using var conn = await _db!.OpenConnectionAsync();
        var sw = Stopwatch.StartNew();
        await conn.ExecuteAsync("""CREATE UNLOGGED TABLE IF NOT EXISTS staging (kind smallint NOT NULL, ident text COLLATE "C" NOT NULL); TRUNCATE staging;""");
        await using (var importer = await conn.BeginBinaryImportAsync("COPY staging (kind, ident) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var i in users)
            {
                var anonymous = SyntheticWorkspace.IsAnonymous(i);
                await importer.StartRowAsync();
                await importer.WriteAsync((short)(anonymous ? 1 : 0), NpgsqlDbType.Smallint);
                await importer.WriteAsync((anonymous ? "d" : "u") + i, NpgsqlDbType.Text);
            }

            await importer.CompleteAsync();
        }

        await conn.ExecuteAsync("""
            INSERT INTO memberships (cohort, ordinal)
            SELECT @cohort, u.ordinal FROM staging s JOIN users u ON u.external_id = s.ident WHERE s.kind = 0
            UNION ALL
            SELECT @cohort, u.ordinal FROM staging s JOIN users u ON u.device_id = s.ident AND NOT u.identified WHERE s.kind = 1
            ON CONFLICT DO NOTHING
            """, new { cohort }, commandTimeout: 0);
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Loads cohort memberships (ordinals) for the SQL side of the evaluation comparison; not timed.</summary>
    public async Task LoadCohortAsync(int cohort, int[] ordinals)
    {
        await using var conn = await _db!.OpenConnectionAsync();
        await conn.ExecuteAsync("DELETE FROM memberships WHERE cohort = @cohort", new { cohort });
        await using (var importer = await conn.BeginBinaryImportAsync("COPY memberships (cohort, ordinal) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var o in ordinals)
            {
                await importer.StartRowAsync();
                await importer.WriteAsync(cohort, NpgsqlDbType.Integer);
                await importer.WriteAsync(o, NpgsqlDbType.Integer);
            }

            await importer.CompleteAsync();
        }

        await conn.ExecuteAsync("ANALYZE memberships");
    }

    /// <summary>
    /// "A includes AND (B includes OR C excludes)" in SQL over the same memberships; returns (size, median ms of 5).
    /// </summary>
    public async Task<(long Size, double MedianMs)> EvaluateAsync(int a, int b, int c)
    {
        const string sql = """
            SELECT count(*) FROM memberships m
            JOIN live_users l ON l.ordinal = m.ordinal
            WHERE m.cohort = @a
              AND (EXISTS (SELECT 1 FROM memberships x WHERE x.cohort = @b AND x.ordinal = m.ordinal)
                   OR NOT EXISTS (SELECT 1 FROM memberships y WHERE y.cohort = @c AND y.ordinal = m.ordinal))
            """;
        await using var conn = await _db!.OpenConnectionAsync();
        var times = new List<double>();
        long size = 0;
        for (var run = 0; run < 5; run++)
        {
            var sw = Stopwatch.StartNew();
            size = await conn.ExecuteScalarAsync<long>(sql, new { a, b, c }, commandTimeout: 0);
            times.Add(sw.Elapsed.TotalMilliseconds);
        }

        return (size, Stats.Median(times));
    }

    public async ValueTask DisposeAsync()
    {
        if (_db is not null)
        {
            await _db.DisposeAsync();
        }
    }
}
