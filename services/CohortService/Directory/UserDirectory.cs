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
    /// </summary>
    public async Task<UpsertResult> UpsertAsync(string ws, IAsyncEnumerable<ProfileLine> lines, List<LineError> errors, CancellationToken ct)
    {
        long upserted = 0, identified = 0;
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
                var (u, i) = await UpsertChunkAsync(ws, chunk, errors, ct);
                (upserted, identified) = (upserted + u, identified + i);
                chunk.Clear();
            }
        }

        if (chunk.Count > 0)
        {
            var (u, i) = await UpsertChunkAsync(ws, chunk, errors, ct);
            (upserted, identified) = (upserted + u, identified + i);
        }

        var rejected = errors.Count;
        errors.Sort((a, b) => a.Line.CompareTo(b.Line));
        if (errors.Count > options.Value.MaxReportedErrors)
        {
            errors.RemoveRange(options.Value.MaxReportedErrors, errors.Count - options.Value.MaxReportedErrors);
        }

        outbox.Notify();
        return new UpsertResult(upserted, identified, rejected, errors);
    }

    private async Task<(long Upserted, long Identified)> UpsertChunkAsync(
        string ws, List<ProfileLine> lines, List<LineError> errors, CancellationToken ct)
    {
        var merged = ProfileBatch.Merge(lines, errors);
        if (merged.Count == 0)
        {
            return (0, 0);
        }

        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await LockWorkspaceAsync(conn, tx, ws, ct);

        const string staging = """
            CREATE TEMP TABLE s_profiles (grp int PRIMARY KEY, external_id text COLLATE "C") ON COMMIT DROP;
            CREATE TEMP TABLE s_aliases (grp int NOT NULL, alias_name text COLLATE "C" NOT NULL, alias_label text COLLATE "C" NOT NULL) ON COMMIT DROP;
            CREATE TEMP TABLE s_devices (grp int NOT NULL, device_id text COLLATE "C" NOT NULL) ON COMMIT DROP;
            """;
        await conn.ExecuteAsync(new CommandDefinition(staging, transaction: tx, cancellationToken: ct));
        await CopyAsync(conn, merged, ct);
        // Statistics on the staging tables let the planner hash the small side instead of the directory.
        await conn.ExecuteAsync(new CommandDefinition(
            "ANALYZE s_profiles; ANALYZE s_aliases; ANALYZE s_devices", transaction: tx, cancellationToken: ct));

        // Every live user any identifier of a group already names.
        const string resolve = """
            CREATE TEMP TABLE s_owner ON COMMIT DROP AS
            SELECT DISTINCT grp, ordinal FROM (
                SELECT p.grp, u.ordinal FROM s_profiles p
                JOIN users u ON u.workspace_id = @ws AND u.external_id = p.external_id AND u.deleted_at IS NULL
                UNION ALL
                SELECT a.grp, ua.ordinal FROM s_aliases a
                JOIN user_aliases ua ON ua.workspace_id = @ws AND ua.alias_name = a.alias_name AND ua.alias_label = a.alias_label
                UNION ALL
                SELECT d.grp, ud.ordinal FROM s_devices d
                JOIN user_devices ud ON ud.workspace_id = @ws AND ud.device_id = d.device_id
            ) x;
            ANALYZE s_owner;
            """;
        await conn.ExecuteAsync(new CommandDefinition(resolve, new { ws }, tx, cancellationToken: ct));

        // A group naming two users, or an identified user under another external_id, is a conflict: rejected.
        const string conflicts = """
            SELECT p.grp, count(DISTINCT o.ordinal) > 1 AS several
            FROM s_profiles p JOIN s_owner o ON o.grp = p.grp
            JOIN users u ON u.workspace_id = @ws AND u.ordinal = o.ordinal
            GROUP BY p.grp
            HAVING count(DISTINCT o.ordinal) > 1
                OR bool_or(p.external_id IS NOT NULL AND u.external_id IS NOT NULL AND u.external_id <> p.external_id)
            """;
        var bad = (await conn.QueryAsync<(int Grp, bool Several)>(new CommandDefinition(conflicts, new { ws }, tx, cancellationToken: ct))).AsList();
        if (bad.Count > 0)
        {
            var byGroup = merged.ToDictionary(g => g.Group);
            foreach (var (grp, several) in bad)
            {
                var reason = several
                    ? "its identifiers belong to different existing users"
                    : "its identifiers belong to a user with a different external_id";
                errors.AddRange(byGroup[grp].Lines.Select(l => new LineError(l, reason)));
            }

            const string drop = """
                DELETE FROM s_profiles WHERE grp = ANY(@groups);
                DELETE FROM s_owner WHERE grp = ANY(@groups);
                DELETE FROM s_aliases WHERE grp = ANY(@groups);
                DELETE FROM s_devices WHERE grp = ANY(@groups);
                """;
            await conn.ExecuteAsync(new CommandDefinition(drop, new { groups = bad.Select(b => b.Grp).ToArray() }, tx, cancellationToken: ct));
        }

        // Identification (before new users join s_owner, so it only joins existing owners): an anonymous user named by a line with an external_id takes it; its device ids stop matching.
        const string identify = """
            UPDATE users u SET external_id = p.external_id, identified = true, updated_at = now()
            FROM s_profiles p JOIN s_owner o ON o.grp = p.grp
            WHERE u.workspace_id = @ws AND u.ordinal = o.ordinal AND u.external_id IS NULL AND p.external_id IS NOT NULL
              AND u.deleted_at IS NULL
            RETURNING u.ordinal
            """;
        var identifiedOrdinals = (await conn.QueryAsync<int>(new CommandDefinition(identify, new { ws }, tx, cancellationToken: ct))).AsList();

        // New users: groups nobody owns get the next ordinals of the workspace, in line order.
        const string newGroups = """
            CREATE TEMP TABLE s_new ON COMMIT DROP AS
            SELECT p.grp, p.external_id, (row_number() OVER (ORDER BY p.grp) - 1)::int AS rn
            FROM s_profiles p WHERE NOT EXISTS (SELECT 1 FROM s_owner o WHERE o.grp = p.grp)
            """;
        await conn.ExecuteAsync(new CommandDefinition(newGroups, transaction: tx, cancellationToken: ct));
        const string create = """
            WITH n AS (SELECT count(*)::int AS c FROM s_new),
            counter AS (
                UPDATE workspaces w SET next_ordinal = w.next_ordinal + n.c FROM n
                WHERE w.workspace_id = @ws RETURNING w.next_ordinal - n.c AS base
            ), ins AS (
                INSERT INTO users (workspace_id, ordinal, external_id, identified)
                SELECT @ws, counter.base + s.rn, s.external_id, s.external_id IS NOT NULL FROM s_new s, counter
                RETURNING ordinal
            ), own AS (
                INSERT INTO s_owner (grp, ordinal) SELECT s.grp, counter.base + s.rn FROM s_new s, counter
            )
            SELECT ordinal FROM ins
            """;
        var changed = new HashSet<int>(await conn.QueryAsync<int>(new CommandDefinition(create, new { ws }, tx, cancellationToken: ct)));
        changed.UnionWith(identifiedOrdinals);


        const string identifiers = """
            WITH a AS (
                INSERT INTO user_aliases (workspace_id, alias_name, alias_label, ordinal)
                SELECT @ws, s.alias_name, s.alias_label, o.ordinal FROM s_aliases s JOIN s_owner o ON o.grp = s.grp
                ON CONFLICT DO NOTHING
                RETURNING ordinal
            ), d AS (
                INSERT INTO user_devices (workspace_id, device_id, ordinal)
                SELECT @ws, s.device_id, o.ordinal FROM s_devices s JOIN s_owner o ON o.grp = s.grp
                ON CONFLICT DO NOTHING
                RETURNING ordinal
            )
            SELECT ordinal FROM a UNION SELECT ordinal FROM d
            """;
        changed.UnionWith(await conn.QueryAsync<int>(new CommandDefinition(identifiers, new { ws }, tx, cancellationToken: ct)));

        if (changed.Count > 0)
        {
            await OutboxRepository.AddDirectoryChangeAsync(conn, tx, ws, [.. changed.Order()], ct);
        }

        await tx.CommitAsync(ct);
        var rejectedGroups = bad.Select(b => b.Grp).ToHashSet();
        var accepted = merged.Where(g => !rejectedGroups.Contains(g.Group)).Sum(g => g.Lines.Count);
        Log.Upserted(logger, ws, accepted, identifiedOrdinals.Count, changed.Count);
        return (accepted, identifiedOrdinals.Count);
    }

    // Row writes are synchronous on purpose: they fill Npgsql's buffer, and an await per value costs more than the I/O.
    private static async Task CopyAsync(NpgsqlConnection conn, List<MergedProfile> merged, CancellationToken ct)
    {
        await using (var w = await conn.BeginBinaryImportAsync("COPY s_profiles (grp, external_id) FROM STDIN (FORMAT BINARY)", ct))
        {
            foreach (var g in merged)
            {
                w.StartRow();
                w.Write(g.Group, NpgsqlDbType.Integer);
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

        await using (var w = await conn.BeginBinaryImportAsync("COPY s_aliases (grp, alias_name, alias_label) FROM STDIN (FORMAT BINARY)", ct))
        {
            foreach (var g in merged)
            {
                foreach (var a in g.Aliases)
                {
                    w.StartRow();
                    w.Write(g.Group, NpgsqlDbType.Integer);
                    w.Write(a.AliasName, NpgsqlDbType.Text);
                    w.Write(a.AliasLabel, NpgsqlDbType.Text);
                }
            }

            await w.CompleteAsync(ct);
        }

        await using (var w = await conn.BeginBinaryImportAsync("COPY s_devices (grp, device_id) FROM STDIN (FORMAT BINARY)", ct))
        {
            foreach (var g in merged)
            {
                foreach (var d in g.DeviceIds)
                {
                    w.StartRow();
                    w.Write(g.Group, NpgsqlDbType.Integer);
                    w.Write(d, NpgsqlDbType.Text);
                }
            }

            await w.CompleteAsync(ct);
        }
    }

    private static async Task LockWorkspaceAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string ws, CancellationToken ct)
    {
        await CohortRepository.EnsureWorkspaceAsync(conn, tx, ws, ct);
        const string sql = "SELECT 1 FROM workspaces WHERE workspace_id = @ws FOR UPDATE";
        await conn.ExecuteAsync(new CommandDefinition(sql, new { ws }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Deletes live users by external_id: they lose their identifiers (which may then name new users) and leave every
    /// cohort; each cohort they left gets a new version, a change-log entry and a CohortUpdated. Returns the ordinals.
    /// </summary>
    public async Task<int[]> DeleteAsync(string ws, IReadOnlyList<string> externalIds, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await LockWorkspaceAsync(conn, tx, ws, ct);

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

        // Lock the affected cohorts in id order (as imports would), then remove the users in one statement.
        const string lockCohorts = """
            SELECT id FROM cohorts
            WHERE id IN (SELECT cohort_pk FROM memberships WHERE workspace_id = @ws AND ordinal = ANY(@ordinals))
            ORDER BY id FOR UPDATE
            """;
        await conn.ExecuteAsync(new CommandDefinition(lockCohorts, new { ws, ordinals }, tx, cancellationToken: ct));

        const string leave = """
            WITH gone AS (
                DELETE FROM memberships WHERE workspace_id = @ws AND ordinal = ANY(@ordinals)
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
        [LoggerMessage(EventId = 200, Level = LogLevel.Information,
            Message = "Directory of {WorkspaceId}: {Accepted} profiles upserted, {Identified} identified, {Changed} users changed")]
        public static partial void Upserted(ILogger logger, string workspaceId, long accepted, int identified, int changed);

        [LoggerMessage(EventId = 201, Level = LogLevel.Information,
            Message = "Directory of {WorkspaceId}: {Deleted} users deleted, {Cohorts} cohorts left")]
        public static partial void Deleted(ILogger logger, string workspaceId, int deleted, int cohorts);
    }
}
