using System.Threading.Channels;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Imports;
using CohortBridge.CohortService.Outbox;
using Dapper;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;

namespace CohortBridge.CohortService.Directory;

public sealed record UpsertResult(long Upserted, long Identified, long Rejected, List<LineError> Errors);

/// <summary>
/// The user directory of each workspace: set-based upserts (binary COPY into staging tables, then a merge),
/// identification of anonymous users, deletion. Directory writes hold the workspace row FOR UPDATE; every change is
/// recorded in the outbox (published as UserDirectoryChanged; deletions also raise CohortUpdated).
/// </summary>
public sealed partial class UserDirectory(
    NpgsqlDataSource dataSource, OutboxSignal outbox, IOptions<CohortsOptions> options, ILogger<UserDirectory> logger)
{
    /// <summary>Profiles merged per transaction; later chunks see the users earlier ones created.</summary>
    public const int ChunkSize = 250_000;

    public Task<UpsertResult> UpsertAsync(string ws, IEnumerable<ProfileLine> lines, CancellationToken ct) =>
        UpsertAsync(ws, Async(lines), [], ct);

    private static async IAsyncEnumerable<ProfileLine> Async(IEnumerable<ProfileLine> lines)
    {
        await Task.CompletedTask;
        foreach (var line in lines)
        {
            yield return line;
        }
    }

    /// <summary>
    /// Upserts profiles; <paramref name="errors"/> may already hold lines the caller could not parse (they count as
    /// rejected). Each valid line either lands or is rejected with its line number and reason.
    /// Reading, validating and merging the next chunk (this process) overlaps with writing the current one (PostgreSQL):
    /// a producer task fills a one-slot channel, this method drains it, one transaction per chunk, in order.
    /// </summary>
    public async Task<UpsertResult> UpsertAsync(string ws, IAsyncEnumerable<ProfileLine> lines, List<LineError> errors, CancellationToken ct)
    {
        long upserted = 0, identified = 0;
        var chunks = Channel.CreateBounded<List<MergedProfile>>(new BoundedChannelOptions(1) { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);

        // The producer alone writes to errors (the caller's parser adds to it on the same task); chunk conflicts go to
        // writeErrors and are merged once both sides are done.
        var producer = Task.Run(() => ProduceChunksAsync(lines, errors, chunks.Writer, stop.Token), CancellationToken.None);
        var writeErrors = new List<LineError>();
        var state = new ChunkState();
        var waited = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            while (await chunks.Reader.WaitToReadAsync(CancellationToken.None))
            {
                while (chunks.Reader.TryRead(out var merged))
                {
                    var waitedMs = waited.ElapsedMilliseconds;
                    var (u, i) = await UpsertChunkAsync(ws, merged, writeErrors, state, ct);
                    Log.ChunkTimings(logger, ws, merged.Count, waitedMs, waited.ElapsedMilliseconds - waitedMs, state.TryDirect);
                    waited.Restart();
                    (upserted, identified) = (upserted + u, identified + i);
                }
            }
        }
        catch
        {
            await stop.CancelAsync();
            try
            {
                await producer;
            }
            catch (Exception)
            {
                // The write failure is the one to report.
            }

            throw;
        }

        await producer; // rethrows a read failure (e.g. the client went away): chunks read before it are committed
        errors.AddRange(writeErrors);
        var rejected = errors.Count;
        errors.Sort((a, b) => a.Line.CompareTo(b.Line));
        if (errors.Count > options.Value.MaxReportedErrors)
        {
            errors.RemoveRange(options.Value.MaxReportedErrors, errors.Count - options.Value.MaxReportedErrors);
        }

        outbox.Notify();
        return new UpsertResult(upserted, identified, rejected, errors);
    }

    private static async Task ProduceChunksAsync(
        IAsyncEnumerable<ProfileLine> lines, List<LineError> errors, ChannelWriter<List<MergedProfile>> writer, CancellationToken ct)
    {
        try
        {
            var chunk = new List<ProfileLine>(1024);
            await foreach (var line in lines.WithCancellation(ct))
            {
                if (ProfileBatch.Validate(line.Profile) is { } error)
                {
                    errors.Add(new LineError(line.Line, error));
                    continue;
                }

                chunk.Add(line);
                if (chunk.Count == ChunkSize)
                {
                    var merged = ProfileBatch.Merge(chunk, errors);
                    chunk = new List<ProfileLine>(ChunkSize);
                    await writer.WriteAsync(merged, ct);
                }
            }

            if (chunk.Count > 0)
            {
                await writer.WriteAsync(ProfileBatch.Merge(chunk, errors), ct);
            }
        }
        finally
        {
            writer.TryComplete();
        }
    }

    /// <summary>Per request: whether the next chunk first tries the direct path (no look-ups).</summary>
    private sealed class ChunkState
    {
        public bool TryDirect { get; set; } = true;
    }

    /// <summary>
    /// One chunk, one transaction, under the directory lock. Direct path first: when none of the chunk's identifiers
    /// exists in the directory, every group is a new user, so the groups are copied straight into users,
    /// user_aliases and user_devices with their ordinals (binary COPY; the unique indexes are the look-up). A unique
    /// violation proves some identifier exists: back to the savepoint and the general path (staging tables, index
    /// look-ups, conflicts, identification, then the same COPY for the groups that are new).
    /// </summary>
    private async Task<(long Upserted, long Identified)> UpsertChunkAsync(
        string ws, List<MergedProfile> merged, List<LineError> errors, ChunkState state, CancellationToken ct)
    {
        if (merged.Count == 0)
        {
            return (0, 0);
        }

        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var next = await LockForUpsertAsync(conn, tx, ws, ct);

        if (state.TryDirect || next == 0)
        {
            await tx.SaveAsync("direct", ct);
            try
            {
                var ordinals = new int[merged.Count];
                for (var i = 0; i < ordinals.Length; i++)
                {
                    ordinals[i] = next + i;
                }

                await CopyNewUsersAsync(conn, ws, merged, ordinals, ct);
                await SetNextOrdinalAsync(conn, tx, ws, next + merged.Count, ct);
                await OutboxRepository.AddDirectoryChangeAsync(conn, tx, ws, ordinals, ct);
                await tx.CommitAsync(ct);
                await AnalyzeIfWorkspaceGrewAsync(conn, ws, ct);
                var lines = merged.Sum(g => g.Lines.Count);
                Log.Upserted(logger, ws, lines, 0, merged.Count);
                return (lines, 0);
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UniqueViolation)
            {
                await tx.RollbackAsync("direct", ct);
                state.TryDirect = false;
            }
        }

        var result = await UpsertChunkGeneralAsync(conn, tx, ws, next, merged, errors, state, ct);
        await tx.CommitAsync(ct);
        await AnalyzeIfWorkspaceGrewAsync(conn, ws, ct);
        return result;
    }

    private async Task<(long Upserted, long Identified)> UpsertChunkGeneralAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, string ws, int next, List<MergedProfile> merged, List<LineError> errors,
        ChunkState state, CancellationToken ct)
    {
        // Staging: seq = the group's index in merged (line order); no indexes, no statistics needed (the plan is fixed).
        const string staging = """
            CREATE TEMP TABLE s_profiles (seq int NOT NULL, external_id text COLLATE "C") ON COMMIT DROP;
            CREATE TEMP TABLE s_aliases (seq int NOT NULL, has_ext boolean NOT NULL, alias_name text COLLATE "C" NOT NULL, alias_label text COLLATE "C" NOT NULL) ON COMMIT DROP;
            CREATE TEMP TABLE s_devices (seq int NOT NULL, has_ext boolean NOT NULL, device_id text COLLATE "C" NOT NULL) ON COMMIT DROP;
            """;
        await conn.ExecuteAsync(new CommandDefinition(staging, transaction: tx, cancellationToken: ct));
        await CopyStagingAsync(conn, merged, ct);

        // Owners: every live user an identifier of a group names, one row per group, by index look-ups into the
        // workspace's (workspace_id, key) indexes (never a scan of the directory). A group with an external_id that
        // only matched through an alias or device id also reads its owner's external_id (identify or conflict).
        const string resolve = """
            WITH o AS (
                SELECT p.seq, u.ordinal, true AS by_ext, true AS has_ext FROM s_profiles p
                JOIN users u ON u.workspace_id = @ws AND u.external_id = p.external_id
                    AND u.external_id IS NOT NULL AND u.deleted_at IS NULL
                UNION ALL
                SELECT a.seq, ua.ordinal, false, a.has_ext FROM s_aliases a
                JOIN user_aliases ua ON ua.workspace_id = @ws AND ua.alias_name = a.alias_name AND ua.alias_label = a.alias_label
                UNION ALL
                SELECT d.seq, ud.ordinal, false, d.has_ext FROM s_devices d
                JOIN user_devices ud ON ud.workspace_id = @ws AND ud.device_id = d.device_id
            ), g AS (
                SELECT seq, min(ordinal) AS ordinal, max(ordinal) <> min(ordinal) AS several,
                       bool_or(by_ext) AS by_ext, bool_or(has_ext) AS has_ext
                FROM o GROUP BY seq
            )
            SELECT g.seq, g.ordinal, g.several,
                   CASE WHEN NOT g.several AND NOT g.by_ext AND g.has_ext THEN
                       (SELECT u.external_id IS NULL FROM users u WHERE u.workspace_id = @ws AND u.ordinal = g.ordinal)
                   END AS anonymous
            FROM g
            """;
        List<(int Seq, int Ordinal, bool Several, bool? Anonymous)> owners = [];
        if (next > 0)
        {
            await RefreshStaleStatisticsAsync(conn, tx, ct);
            // Nested loops over the staging rows: a hash or merge join would read the whole directory. No JIT: it
            // costs more to compile than this query runs.
            await conn.ExecuteAsync(new CommandDefinition(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off",
                transaction: tx, cancellationToken: ct));
            owners = (await conn.QueryAsync<(int Seq, int Ordinal, bool Several, bool? Anonymous)>(
                new CommandDefinition(resolve, new { ws }, tx, cancellationToken: ct))).AsList();
            await conn.ExecuteAsync(new CommandDefinition(
                "RESET enable_hashjoin; RESET enable_mergejoin; RESET jit", transaction: tx, cancellationToken: ct));
        }

        // ordinal per group: an owner's, a new one (>= next), or -1 (rejected).
        var map = new int[merged.Count];
        Array.Fill(map, int.MinValue);
        var identifyOrdinals = new List<int>();
        var identifying = new HashSet<int>();
        var identifyIds = new List<string>();
        var rejected = 0;
        owners.Sort((a, b) => a.Seq.CompareTo(b.Seq));
        foreach (var (seq, ordinal, several, anonymous) in owners)
        {
            var g = merged[seq];
            string? reason = null;
            if (several)
            {
                reason = "its identifiers belong to different existing users";
            }
            else if (anonymous is { } isAnonymous)
            {
                // Two groups of one chunk naming the same anonymous user: the first identifies it, the other would
                // put a second external_id on it.
                if (isAnonymous && identifying.Add(ordinal))
                {
                    identifyOrdinals.Add(ordinal);
                    identifyIds.Add(g.ExternalId!);
                }
                else
                {
                    reason = "its identifiers belong to a user with a different external_id";
                }
            }

            if (reason is null)
            {
                map[seq] = ordinal;
            }
            else
            {
                map[seq] = -1;
                rejected += g.Lines.Count;
                errors.AddRange(g.Lines.Select(l => new LineError(l, reason)));
            }
        }

        // Identification: an anonymous user named by a line with an external_id takes it; its device ids stop matching.
        var identified = new List<int>();
        if (identifyOrdinals.Count > 0)
        {
            const string identify = """
                UPDATE users u SET external_id = x.external_id, identified = true, updated_at = now()
                FROM unnest(@ordinals::int[], @externalIds::text[]) AS x(ordinal, external_id)
                WHERE u.workspace_id = @ws AND u.ordinal = x.ordinal AND u.external_id IS NULL AND u.deleted_at IS NULL
                RETURNING u.ordinal
                """;
            identified = (await conn.QueryAsync<int>(new CommandDefinition(identify,
                new { ws, ordinals = identifyOrdinals.ToArray(), externalIds = identifyIds.ToArray() }, tx, cancellationToken: ct))).AsList();
        }

        // New users: the groups nobody owns, next ordinals of the workspace in line order.
        var newGroups = new List<MergedProfile>();
        var newOrdinals = new List<int>();
        var ownedSeqs = new List<int>();
        var ownedOrdinals = new List<int>();
        var created = next;
        for (var seq = 0; seq < merged.Count; seq++)
        {
            if (map[seq] == int.MinValue)
            {
                map[seq] = created++;
                newGroups.Add(merged[seq]);
                newOrdinals.Add(map[seq]);
            }
            else if (map[seq] >= 0)
            {
                ownedSeqs.Add(seq);
                ownedOrdinals.Add(map[seq]);
            }
        }

        var changed = new HashSet<int>(identified);
        if (newGroups.Count > 0)
        {
            // Their identifiers matched nothing and are unique in the chunk: straight into the directory.
            await CopyNewUsersAsync(conn, ws, newGroups, [.. newOrdinals], ct);
            await SetNextOrdinalAsync(conn, tx, ws, created, ct);
            changed.UnionWith(newOrdinals);
        }

        if (ownedSeqs.Count > 0)
        {
            // Existing users: add the identifiers they do not have yet (an identifier that exists is theirs).
            const string identifiers = """
                WITH m AS (SELECT * FROM unnest(@seqs::int[], @ordinals::int[]) AS m(seq, ordinal)),
                a AS (
                    INSERT INTO user_aliases (workspace_id, alias_name, alias_label, ordinal)
                    SELECT @ws, s.alias_name, s.alias_label, m.ordinal FROM s_aliases s JOIN m ON m.seq = s.seq
                    ON CONFLICT DO NOTHING
                    RETURNING ordinal
                ), d AS (
                    INSERT INTO user_devices (workspace_id, device_id, ordinal)
                    SELECT @ws, s.device_id, m.ordinal FROM s_devices s JOIN m ON m.seq = s.seq
                    ON CONFLICT DO NOTHING
                    RETURNING ordinal
                )
                SELECT ordinal FROM a UNION SELECT ordinal FROM d
                """;
            changed.UnionWith(await conn.QueryAsync<int>(new CommandDefinition(identifiers,
                new { ws, seqs = ownedSeqs.ToArray(), ordinals = ownedOrdinals.ToArray() }, tx, cancellationToken: ct)));
        }

        if (changed.Count > 0)
        {
            await OutboxRepository.AddDirectoryChangeAsync(conn, tx, ws, [.. changed.Order()], ct);
        }

        // A chunk that met no existing user suggests the rest of the upload is new too.
        state.TryDirect = owners.Count == 0;
        var accepted = merged.Sum(g => g.Lines.Count) - rejected;
        Log.Upserted(logger, ws, accepted, identified.Count, changed.Count);
        return (accepted, identified.Count);
    }

    /// <summary>
    /// Binary COPY of new users and their identifiers straight into the directory tables (identifiers first: on a
    /// fresh workspace an existing identifier is found before any user row is written). A unique violation means an
    /// identifier is taken; the caller rolls back.
    /// </summary>
    // Row writes are synchronous on purpose: they fill Npgsql's buffer, and an await per value costs more than the I/O.
    private static async Task CopyNewUsersAsync(
        NpgsqlConnection conn, string ws, List<MergedProfile> groups, int[] ordinals, CancellationToken ct)
    {
        if (groups.Any(g => g.Aliases.Count > 0))
        {
            await using var w = await conn.BeginBinaryImportAsync(
                "COPY user_aliases (workspace_id, alias_name, alias_label, ordinal) FROM STDIN (FORMAT BINARY)", ct);
            for (var i = 0; i < groups.Count; i++)
            {
                foreach (var a in groups[i].Aliases)
                {
                    w.StartRow();
                    w.Write(ws, NpgsqlDbType.Text);
                    w.Write(a.AliasName, NpgsqlDbType.Text);
                    w.Write(a.AliasLabel, NpgsqlDbType.Text);
                    w.Write(ordinals[i], NpgsqlDbType.Integer);
                }
            }

            await w.CompleteAsync(ct);
        }

        if (groups.Any(g => g.DeviceIds.Count > 0))
        {
            await using var w = await conn.BeginBinaryImportAsync(
                "COPY user_devices (workspace_id, device_id, ordinal) FROM STDIN (FORMAT BINARY)", ct);
            for (var i = 0; i < groups.Count; i++)
            {
                foreach (var d in groups[i].DeviceIds)
                {
                    w.StartRow();
                    w.Write(ws, NpgsqlDbType.Text);
                    w.Write(d, NpgsqlDbType.Text);
                    w.Write(ordinals[i], NpgsqlDbType.Integer);
                }
            }

            await w.CompleteAsync(ct);
        }

        await using (var w = await conn.BeginBinaryImportAsync(
            "COPY users (workspace_id, ordinal, external_id, identified) FROM STDIN (FORMAT BINARY)", ct))
        {
            for (var i = 0; i < groups.Count; i++)
            {
                var g = groups[i];
                w.StartRow();
                w.Write(ws, NpgsqlDbType.Text);
                w.Write(ordinals[i], NpgsqlDbType.Integer);
                if (g.ExternalId is null)
                {
                    w.WriteNull();
                }
                else
                {
                    w.Write(g.ExternalId, NpgsqlDbType.Text);
                }

                w.Write(g.ExternalId is not null, NpgsqlDbType.Boolean);
            }

            await w.CompleteAsync(ct);
        }
    }

    private static async Task CopyStagingAsync(NpgsqlConnection conn, List<MergedProfile> merged, CancellationToken ct)
    {
        await using (var w = await conn.BeginBinaryImportAsync("COPY s_profiles (seq, external_id) FROM STDIN (FORMAT BINARY)", ct))
        {
            for (var seq = 0; seq < merged.Count; seq++)
            {
                var g = merged[seq];
                w.StartRow();
                w.Write(seq, NpgsqlDbType.Integer);
                if (g.ExternalId is null)
                {
                    w.WriteNull();
                }
                else
                {
                    w.Write(g.ExternalId, NpgsqlDbType.Text);
                }
            }

            await w.CompleteAsync(ct);
        }

        await using (var w = await conn.BeginBinaryImportAsync("COPY s_aliases (seq, has_ext, alias_name, alias_label) FROM STDIN (FORMAT BINARY)", ct))
        {
            for (var seq = 0; seq < merged.Count; seq++)
            {
                var g = merged[seq];
                foreach (var a in g.Aliases)
                {
                    w.StartRow();
                    w.Write(seq, NpgsqlDbType.Integer);
                    w.Write(g.ExternalId is not null, NpgsqlDbType.Boolean);
                    w.Write(a.AliasName, NpgsqlDbType.Text);
                    w.Write(a.AliasLabel, NpgsqlDbType.Text);
                }
            }

            await w.CompleteAsync(ct);
        }

        await using (var w = await conn.BeginBinaryImportAsync("COPY s_devices (seq, has_ext, device_id) FROM STDIN (FORMAT BINARY)", ct))
        {
            for (var seq = 0; seq < merged.Count; seq++)
            {
                var g = merged[seq];
                foreach (var d in g.DeviceIds)
                {
                    w.StartRow();
                    w.Write(seq, NpgsqlDbType.Integer);
                    w.Write(g.ExternalId is not null, NpgsqlDbType.Boolean);
                    w.Write(d, NpgsqlDbType.Text);
                }
            }

            await w.CompleteAsync(ct);
        }
    }

    /// <summary>
    /// Table-wide staleness (<see cref="RefreshStaleStatisticsAsync"/>) misses a workspace that is small next to the
    /// others: 300,000 users added to a table of 10 million change it by 3%, yet while the statistics do not know the
    /// workspace the planner estimates it at one row and may match each identifier by reading the whole workspace
    /// through (workspace_id, ordinal) (measured: snapshot chunks of such a workspace ran for minutes instead of
    /// milliseconds). So whenever a workspace has doubled, by 10,000 users or more, since the directory tables were
    /// last analyzed for it (<c>workspaces.analyzed_users</c>), they are analyzed, after the commit (the directory lock
    /// is not held meanwhile). This also catches a workspace that grows by many small batches.
    /// </summary>
    private static async Task AnalyzeIfWorkspaceGrewAsync(NpgsqlConnection conn, string ws, CancellationToken ct)
    {
        const string claim = """
            UPDATE workspaces SET analyzed_users = next_ordinal
            WHERE workspace_id = @ws AND next_ordinal >= greatest(2 * analyzed_users, analyzed_users + 10000)
            RETURNING 1
            """;
        if (await conn.ExecuteScalarAsync<int?>(new CommandDefinition(claim, new { ws }, cancellationToken: ct)) is not null)
        {
            await conn.ExecuteAsync(new CommandDefinition(
                "ANALYZE users; ANALYZE user_aliases; ANALYZE user_devices", commandTimeout: 0, cancellationToken: ct));
        }
    }

    /// <summary>
    /// A bulk load outruns autovacuum: until the directory tables are analyzed again, the planner does not know the
    /// new workspace's rows and may probe (workspace_id, ordinal) and filter on the key, reading the whole workspace
    /// per staging row. Re-analyze a table when over 5% of it changed since its statistics were taken.
    /// </summary>
    private static async Task RefreshStaleStatisticsAsync(NpgsqlConnection conn, NpgsqlTransaction tx, CancellationToken ct)
    {
        const string stale = """
            SELECT c.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
            WHERE s.relid IN ('users'::regclass, 'user_aliases'::regclass, 'user_devices'::regclass)
              AND s.n_mod_since_analyze > greatest(c.reltuples, 0) * 0.05 + 1000
            """;
        foreach (var table in await conn.QueryAsync<string>(new CommandDefinition(stale, transaction: tx, cancellationToken: ct)))
        {
            var analyze = table switch
            {
                "users" => "ANALYZE users",
                "user_aliases" => "ANALYZE user_aliases",
                _ => "ANALYZE user_devices",
            };
            await conn.ExecuteAsync(new CommandDefinition(analyze, transaction: tx, cancellationToken: ct));
        }
    }

    /// <summary>
    /// Takes the directory lock (the workspace row, by updating it: its directory_version moves on, which tells
    /// imports matched before that their match must be redone) and returns the next free ordinal.
    /// </summary>
    private static Task<int> LockForUpsertAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string ws, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO workspaces (workspace_id) VALUES (@ws) ON CONFLICT DO NOTHING;
            UPDATE workspaces SET directory_version = directory_version + 1 WHERE workspace_id = @ws RETURNING next_ordinal;
            """;
        return conn.QuerySingleAsync<int>(new CommandDefinition(sql, new { ws }, tx, cancellationToken: ct));
    }

    private static Task SetNextOrdinalAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string ws, int next, CancellationToken ct)
    {
        const string sql = "UPDATE workspaces SET next_ordinal = @next WHERE workspace_id = @ws";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { ws, next }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Deletes live users by external_id: they lose their identifiers (which may then name new users) and leave every
    /// cohort; each cohort they left gets a new version, a change-log entry and a CohortUpdated. Returns the ordinals.
    /// </summary>
    public async Task<int[]> DeleteAsync(string ws, IReadOnlyList<string> externalIds, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        // The same directory lock as upserts (directory_version moves on, so matches made ahead are redone).
        await LockForUpsertAsync(conn, tx, ws, ct);

        const string delete = """
            WITH u AS (
                UPDATE users SET deleted_at = now(), updated_at = now()
                WHERE workspace_id = @ws AND external_id = ANY(@externalIds) AND deleted_at IS NULL
                RETURNING ordinal
            ), a AS (
                DELETE FROM user_aliases WHERE workspace_id = @ws AND ordinal IN (SELECT ordinal FROM u)
            ), d AS (
                DELETE FROM user_devices WHERE workspace_id = @ws AND ordinal IN (SELECT ordinal FROM u)
            )
            SELECT ordinal FROM u ORDER BY ordinal
            """;
        var ordinals = (await conn.QueryAsync<int>(new CommandDefinition(
            delete, new { ws, externalIds = externalIds.ToArray() }, tx, cancellationToken: ct))).ToArray();
        if (ordinals.Length == 0)
        {
            await tx.CommitAsync(ct);
            return ordinals;
        }

        // Lock the affected cohorts in id order (as imports would), then remove the users in one statement. Memberships
        // are found by one index probe per (cohort, ordinal): `ordinal = ANY(@ordinals)` was applied as a filter over the
        // whole cohort when the statistics did not know the cohort yet (CohortRepository.MembersAmongAsync).
        const string lockCohorts = """
            SELECT c.id FROM cohorts c
            WHERE c.workspace_id = @ws
              AND EXISTS (
                  SELECT 1 FROM unnest(@ordinals::int[]) AS o,
                      LATERAL (SELECT 1 FROM memberships m WHERE m.cohort_pk = c.id AND m.ordinal = o LIMIT 1) AS member)
            ORDER BY c.id FOR UPDATE
            """;
        await conn.ExecuteAsync(new CommandDefinition(lockCohorts, new { ws, ordinals }, tx, cancellationToken: ct));

        const string leave = """
            WITH gone AS (
                DELETE FROM memberships WHERE ctid = ANY(ARRAY(
                    SELECT member.ctid FROM cohorts wc, unnest(@ordinals::int[]) AS o,
                        LATERAL (SELECT m.ctid FROM memberships m WHERE m.cohort_pk = wc.id AND m.ordinal = o LIMIT 1) AS member
                    WHERE wc.workspace_id = @ws))
                RETURNING cohort_pk, ordinal
            ), per AS (
                SELECT cohort_pk, array_agg(ordinal ORDER BY ordinal) AS removed FROM gone GROUP BY cohort_pk
            ), c AS (
                UPDATE cohorts c SET version = c.version + 1, member_count = c.member_count - cardinality(per.removed),
                    updated_at = now()
                FROM per WHERE c.id = per.cohort_pk
                RETURNING c.id, c.workspace_id, c.partner, c.cohort_id, c.name, c.version, c.member_count, c.archived,
                          c.created_at, c.updated_at, per.removed
            ), log AS (
                INSERT INTO cohort_changes (cohort_pk, version, name, archived, added, removed, import_id, occurred_at)
                SELECT id, version, name, archived, '{}', removed, NULL, updated_at FROM c
            )
            SELECT * FROM c ORDER BY id
            """;
        var left = (await conn.QueryAsync<LeftCohort>(new CommandDefinition(leave, new { ws, ordinals }, tx, cancellationToken: ct))).AsList();
        foreach (var c in left)
        {
            var cohort = new CohortRow
            {
                Id = c.Id, WorkspaceId = c.WorkspaceId, Partner = c.Partner, CohortId = c.CohortId, Name = c.Name,
                Version = c.Version, MemberCount = c.MemberCount, Archived = c.Archived, CreatedAt = c.CreatedAt, UpdatedAt = c.UpdatedAt,
            };
            var evt = await CohortEvents.BuildAsync(conn, tx, cohort, [], c.Removed, null, options.Value.InlineChangeLimit, ct);
            await OutboxRepository.AddCohortUpdatedAsync(conn, tx, ws, evt, ct);
        }

        await OutboxRepository.AddDirectoryChangeAsync(conn, tx, ws, ordinals, ct);
        await tx.CommitAsync(ct);
        Log.Deleted(logger, ws, ordinals.Length, left.Count);
        outbox.Notify();
        return ordinals;
    }

    private sealed class LeftCohort
    {
        public long Id { get; init; }
        public string WorkspaceId { get; init; } = "";
        public string Partner { get; init; } = "";
        public string CohortId { get; init; } = "";
        public string Name { get; init; } = "";
        public long Version { get; init; }
        public long MemberCount { get; init; }
        public bool Archived { get; init; }
        public DateTimeOffset CreatedAt { get; init; }
        public DateTimeOffset UpdatedAt { get; init; }
        public int[] Removed { get; init; } = [];
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 202, Level = LogLevel.Debug,
            Message = "Directory of {WorkspaceId}: chunk of {Groups} profiles waited {WaitMs} ms for parsing, written in {WriteMs} ms (direct next: {Direct})")]
        public static partial void ChunkTimings(ILogger logger, string workspaceId, int groups, long waitMs, long writeMs, bool direct);

        [LoggerMessage(EventId = 200, Level = LogLevel.Information,
            Message = "Directory of {WorkspaceId}: {Accepted} profiles upserted, {Identified} identified, {Changed} users changed")]
        public static partial void Upserted(ILogger logger, string workspaceId, long accepted, int identified, int changed);

        [LoggerMessage(EventId = 201, Level = LogLevel.Information,
            Message = "Directory of {WorkspaceId}: {Deleted} users deleted, {Cohorts} cohorts left")]
        public static partial void Deleted(ILogger logger, string workspaceId, int deleted, int cohorts);
    }
}
