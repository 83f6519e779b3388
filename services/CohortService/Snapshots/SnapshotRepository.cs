using System.Text.Json;
using CohortBridge.CohortService.Imports;
using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;
using Dapper;
using Npgsql;
using NpgsqlTypes;

namespace CohortBridge.CohortService.Snapshots;

public static class SnapshotState
{
    public const string Staging = "staging";
    public const string Completed = "completed";
    public const string Failed = "failed";
}

/// <summary>One identifier of a snapshot as sent (an alias is its name in Value and its label in Label).</summary>
public readonly record struct StagedIdentifier(IdentifierKind Kind, string Value, string? Label);

/// <summary>A snapshot the sweeper found stale (or whose import already ended some other way).</summary>
public sealed class StaleSnapshot
{
    public Guid ImportId { get; init; }
    public string WorkspaceId { get; init; } = "";
    public string CohortId { get; init; } = "";
    public long ChunksStaged { get; init; }
    public int? ChunkCount { get; init; }
}

/// <summary>
/// The snapshot tables (0002_snapshots.sql). The staging table of a snapshot is named after its import id
/// (<see cref="StagingTable"/>, hex digits only), so the SQL that touches it is a constant with that name spliced in.
/// </summary>
public static class SnapshotRepository
{
    private const string StagingToken = "STAGING_TABLE";

    /// <summary>
    /// For the match of a large snapshot: the hash of up to tens of millions of identifiers in memory rather than in
    /// batches on disk, and no parallel workers, whose rows all pass through the leader: 1M identifiers against 1M users
    /// took 2.9 s with two workers and 1.3-1.9 s without, here on two cores. SET LOCAL: only the completing transaction.
    /// </summary>
    private const string HashJoinPlan = "SET LOCAL work_mem = '512MB'; SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off";

    public static string StagingTable(Guid importId) => "snapshot_staging_" + importId.ToString("N");

    private static string WithStaging(string sql, Guid importId) => sql.Replace(StagingToken, StagingTable(importId), StringComparison.Ordinal);

    /// <summary>Creates the snapshot row and its staging table on the first chunk (committed on its own).</summary>
    public static async Task EnsureAsync(NpgsqlDataSource dataSource, CohortExportReceived m, CancellationToken ct)
    {
        const string insert = """
            INSERT INTO snapshots (import_id, workspace_id, partner, cohort_id, staging_table, state)
            VALUES (@ImportId, @WorkspaceId, @Partner, @CohortId, @table, 'staging')
            ON CONFLICT (import_id) DO NOTHING
            RETURNING import_id
            """;
        const string create = $"""
            CREATE TABLE {StagingToken} (kind smallint NOT NULL, value text COLLATE "C" NOT NULL, label text COLLATE "C")
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var created = await conn.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition(
            insert, new { m.ImportId, m.WorkspaceId, m.Partner, m.CohortId, table = StagingTable(m.ImportId) }, tx, cancellationToken: ct));
        if (created is not null)
        {
            await conn.ExecuteAsync(new CommandDefinition(WithStaging(create, m.ImportId), transaction: tx, cancellationToken: ct));
        }

        await tx.CommitAsync(ct);
    }

    /// <summary>The snapshot's state under a share lock: chunks stage side by side, completion and failure wait for them.</summary>
    public static Task<string?> LockSharedAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, CancellationToken ct)
    {
        const string sql = "SELECT state FROM snapshots WHERE import_id = @importId FOR SHARE";
        return conn.QuerySingleOrDefaultAsync<string?>(new CommandDefinition(sql, new { importId }, tx, cancellationToken: ct));
    }

    /// <summary>The snapshot's state under an exclusive lock (completion, failure): no chunk stages meanwhile.</summary>
    public static Task<string?> LockAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, CancellationToken ct)
    {
        const string sql = "SELECT state FROM snapshots WHERE import_id = @importId FOR UPDATE";
        return conn.QuerySingleOrDefaultAsync<string?>(new CommandDefinition(sql, new { importId }, tx, cancellationToken: ct));
    }

    public static async Task<bool> IsChunkStagedAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, int sequence, CancellationToken ct)
    {
        const string sql = "SELECT EXISTS (SELECT 1 FROM snapshot_chunks WHERE import_id = @importId AND sequence = @sequence)";
        return await conn.ExecuteScalarAsync<bool>(new CommandDefinition(sql, new { importId, sequence }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Records the chunk with its counts (progress; folded into the import when the snapshot finishes, see
    /// <see cref="FinishAsync"/>); false when a concurrent delivery of the same chunk got there first.
    /// </summary>
    public static async Task<bool> InsertChunkAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, SnapshotChunk chunk, long identifiers, ImportStatistics invalid,
        CancellationToken ct)
    {
        const string sql = """
            INSERT INTO snapshot_chunks (import_id, sequence, is_last, chunk_count, identifiers, invalid, invalid_sample)
            VALUES (@importId, @Sequence, @IsLast, @ChunkCount, @identifiers, @invalid, @sample)
            ON CONFLICT (import_id, sequence) DO NOTHING
            """;
        var rows = await conn.ExecuteAsync(new CommandDefinition(sql, new
        {
            importId,
            chunk.Sequence,
            chunk.IsLast,
            ChunkCount = chunk.IsLast ? chunk.ChunkCount : null,
            identifiers = (int)identifiers,
            invalid = (int)invalid.Received,
            sample = invalid.UnmatchedSample.ToArray(),
        }, tx, cancellationToken: ct));
        return rows == 1;
    }

    /// <summary>
    /// Binary COPY of a chunk's valid identifiers, as sent, into the snapshot's staging table: they are matched all at
    /// once when the snapshot completes (<see cref="MatchStagedAsync"/>).
    /// </summary>
    public static async Task StageIdentifiersAsync(NpgsqlConnection conn, Guid importId, IReadOnlyList<StagedIdentifier> identifiers, CancellationToken ct)
    {
        const string copy = $"COPY {StagingToken} (kind, value, label) FROM STDIN (FORMAT BINARY)";
        if (identifiers.Count == 0)
        {
            return;
        }

        await using var writer = await conn.BeginBinaryImportAsync(WithStaging(copy, importId), ct);
        foreach (var identifier in identifiers)
        {
            await writer.StartRowAsync(ct);
            await writer.WriteAsync((short)identifier.Kind, NpgsqlDbType.Smallint, ct);
            await writer.WriteAsync(identifier.Value, NpgsqlDbType.Text, ct);
            if (identifier.Label is null)
            {
                await writer.WriteNullAsync(ct);
            }
            else
            {
                await writer.WriteAsync(identifier.Label, NpgsqlDbType.Text, ct);
            }
        }

        await writer.CompleteAsync(ct);
    }

    /// <summary>Adds the outcome of the match (matched, unmatched by reason, sample) to the import.</summary>
    public static Task AddMatchAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, ImportStatistics stats, CancellationToken ct)
    {
        const string sql = """
            UPDATE imports SET
                matched = matched + @Matched,
                unmatched = (
                    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
                    FROM (
                        SELECT key, sum(value::bigint) AS total
                        FROM (
                            SELECT key, value FROM jsonb_each_text(unmatched)
                            UNION ALL
                            SELECT key, value FROM jsonb_each_text(@unmatched::jsonb)
                        ) counts
                        GROUP BY key
                    ) totals),
                unmatched_sample = (unmatched_sample || @sample::text[])[1:@sampleSize]
            WHERE import_id = @importId
            """;
        return conn.ExecuteAsync(new CommandDefinition(sql, new
        {
            importId,
            stats.Matched,
            unmatched = JsonSerializer.Serialize(stats.Unmatched),
            sample = stats.UnmatchedSample.ToArray(),
            sampleSize = ImportStatistics.SampleSize,
        }, tx, cancellationToken: ct));
    }

    /// <summary>Chunks staged so far, the chunk count once the last chunk is in, and the identifiers they carried.</summary>
    public static Task<(long Staged, int? ChunkCount, long Identifiers)> ProgressAsync(
        NpgsqlConnection conn, NpgsqlTransaction? tx, Guid importId, CancellationToken ct)
    {
        const string sql = """
            SELECT count(*) AS staged, max(chunk_count) AS chunk_count, coalesce(sum(identifiers), 0) AS identifiers
            FROM snapshot_chunks WHERE import_id = @importId
            """;
        return conn.QuerySingleAsync<(long, int?, long)>(new CommandDefinition(sql, new { importId }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// The workspace's directory_version (moved on by every directory write) and its user count (next_ordinal), read
    /// without a lock; null for a workspace without a directory.
    /// </summary>
    public static Task<(long DirectoryVersion, int Users)?> DirectoryAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string ws, CancellationToken ct)
    {
        const string sql = "SELECT directory_version, next_ordinal FROM workspaces WHERE workspace_id = @ws";
        return conn.QuerySingleOrDefaultAsync<(long, int)?>(new CommandDefinition(sql, new { ws }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Matches every staged identifier of the snapshot with one statement, by the rules of <see cref="IdentityMatcher"/>
    /// (an external id or alias names a live user; a device id only an anonymous one), and returns the users it names
    /// and the counts: every occurrence matched or unmatched with its reason. Against a large part of the directory
    /// this is a hash join, which reads the directory once: per-chunk index look-ups cost about 11 µs of database CPU
    /// per identifier at 10M users, mostly cache misses in the B-tree descents. <paramref name="indexLookups"/>: a
    /// snapshot that is small next to the directory is matched by index look-ups instead of hashing every user.
    /// One row comes back per identifier, the identifier itself only when unmatched (for the sample). Grouping in the
    /// database instead (one array of every matched ordinal, each unmatched identifier once) took 28.3 s for 10M
    /// identifiers against 23.4 s this way.
    /// </summary>
    public static async Task<(OrdinalSet Users, ImportStatistics Statistics)> MatchStagedAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, string ws, Guid importId, bool indexLookups, CancellationToken ct)
    {
        // The sizes per kind, from a sample: the planner chooses each branch's join, and the side it hashes, by them.
        // With a sample of 3,000 rows instead of 30,000 it hashed the 10M users instead of 8.5M identifiers: 14.1 s
        // against 10.2 s.
        const string analyze = $"ANALYZE {StagingToken} (kind)";
        const string sql = $"""
            SELECT u.ordinal, CASE WHEN u.ordinal IS NULL THEN 'unknown_external_id' END AS reason,
                CASE WHEN u.ordinal IS NULL THEN s.value END AS display
            FROM {StagingToken} s
            LEFT JOIN users u ON u.workspace_id = @ws AND u.external_id = s.value AND u.deleted_at IS NULL
            WHERE s.kind = 0
            UNION ALL
            SELECT u.ordinal, CASE WHEN u.ordinal IS NULL THEN 'unknown_alias' END,
                CASE WHEN u.ordinal IS NULL THEN s.value || ':' || s.label END
            FROM {StagingToken} s
            LEFT JOIN user_aliases a ON a.workspace_id = @ws AND a.alias_name = s.value AND a.alias_label = s.label
            LEFT JOIN users u ON u.workspace_id = @ws AND u.ordinal = a.ordinal AND u.deleted_at IS NULL
            WHERE s.kind = 1
            UNION ALL
            SELECT CASE WHEN NOT u.identified THEN u.ordinal END,
                CASE WHEN u.ordinal IS NULL THEN 'unknown_device_id' WHEN u.identified THEN 'device_id_of_identified_user' END,
                CASE WHEN u.ordinal IS NULL OR u.identified THEN s.value END
            FROM {StagingToken} s
            LEFT JOIN user_devices d ON d.workspace_id = @ws AND d.device_id = s.value
            LEFT JOIN users u ON u.workspace_id = @ws AND u.ordinal = d.ordinal AND u.deleted_at IS NULL
            WHERE s.kind = 2
            """;

        await conn.ExecuteAsync(new CommandDefinition(WithStaging(analyze, importId), transaction: tx, cancellationToken: ct));
        await conn.ExecuteAsync(new CommandDefinition(
            indexLookups ? IdentityMatcher.IndexLookupPlan : HashJoinPlan, transaction: tx, cancellationToken: ct));
        var users = new OrdinalSet();
        var stats = new ImportStatistics();
        await using var cmd = new NpgsqlCommand(WithStaging(sql, importId), conn, tx) { CommandTimeout = 0 };
        cmd.Parameters.AddWithValue("ws", ws);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            if (!reader.IsDBNull(0))
            {
                users.Add(reader.GetInt32(0));
                stats.CountMatched();
            }
            else
            {
                // The identifier is only read while the unmatched sample still takes values.
                stats.CountUnmatched(reader.GetString(1), stats.UnmatchedSample.Count < ImportStatistics.SampleSize ? reader.GetString(2) : "");
            }
        }

        return (users, stats);
    }

    /// <summary>The cohort's members (the caller holds its row lock, which every membership writer takes).</summary>
    public static async Task<OrdinalSet> MembersAsync(NpgsqlConnection conn, NpgsqlTransaction tx, long cohortPk, CancellationToken ct)
    {
        const string sql = "SELECT ordinal FROM memberships WHERE cohort_pk = @cohortPk";
        var members = new OrdinalSet();
        await using var cmd = new NpgsqlCommand(sql, conn, tx) { CommandTimeout = 0 };
        cmd.Parameters.AddWithValue("cohortPk", cohortPk);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            members.Add(reader.GetInt32(0));
        }

        return members;
    }

    /// <summary>Completes the import: its counts were summed chunk by chunk, this adds the outcome of the diff.</summary>
    public static Task CompleteImportAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, long added, long removed, long? cohortPk, long? cohortVersion,
        string? pendingEvent, CancellationToken ct)
    {
        const string sql = """
            UPDATE imports SET
                status = 'completed', added = @added, removed = @removed, cohort_pk = @cohortPk,
                cohort_version = @cohortVersion, processed = received, completed_at = now(), error = NULL,
                event_json = @pendingEvent
            WHERE import_id = @importId
            """;
        return conn.ExecuteAsync(new CommandDefinition(
            sql, new { importId, added, removed, cohortPk, cohortVersion, pendingEvent }, tx, cancellationToken: ct));
    }

    /// <summary>Fails a still-processing import, keeping the counts it reached.</summary>
    public static Task FailImportAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, string error, CancellationToken ct)
    {
        const string sql = """
            UPDATE imports SET status = 'failed', error = @error, completed_at = now()
            WHERE import_id = @importId AND status = 'processing'
            """;
        return conn.ExecuteAsync(new CommandDefinition(sql, new { importId, error }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Marks the snapshot finished and removes its staging: the chunk rows, once their counts (identifiers received,
    /// invalid ones and their sample) are added to the import, and the staging table. Completed or failed, its turn in
    /// the cohort's request order is done (cohort_sequences), so the cohort's later requests go ahead.
    /// </summary>
    public static async Task FinishAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, string state, CancellationToken ct)
    {
        const string sql = $"""
            UPDATE imports i SET
                received = i.received + p.identifiers,
                processed = coalesce(i.processed, 0) + p.identifiers,
                unmatched = CASE WHEN p.invalid = 0 THEN i.unmatched ELSE jsonb_set(i.unmatched, ARRAY['invalid_identifier'],
                    to_jsonb(coalesce((i.unmatched ->> 'invalid_identifier')::bigint, 0) + p.invalid)) END,
                unmatched_sample = (p.invalid_sample || i.unmatched_sample)[1:@sampleSize]
            FROM snapshot_progress p
            WHERE i.import_id = @importId AND p.import_id = @importId;
            UPDATE snapshots SET state = @state, finished_at = now() WHERE import_id = @importId;
            INSERT INTO cohort_sequences (workspace_id, partner, cohort_id, applied)
            SELECT workspace_id, partner, cohort_id, sequence FROM snapshots WHERE import_id = @importId AND sequence IS NOT NULL
            ON CONFLICT (workspace_id, partner, cohort_id) DO UPDATE SET applied = GREATEST(cohort_sequences.applied, excluded.applied);
            DELETE FROM snapshot_chunks WHERE import_id = @importId;
            DROP TABLE IF EXISTS {StagingToken};
            """;
        await conn.ExecuteAsync(new CommandDefinition(
            WithStaging(sql, importId), new { importId, state, sampleSize = ImportStatistics.SampleSize }, tx, cancellationToken: ct));
    }

    /// <summary>Records the snapshot's place in its cohort's request order (carried by the last chunk).</summary>
    public static Task SetSequenceAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, long sequence, CancellationToken ct)
    {
        const string sql = "UPDATE snapshots SET sequence = @sequence WHERE import_id = @importId AND sequence IS NULL";
        return conn.ExecuteAsync(new CommandDefinition(sql, new { importId, sequence }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Whether the snapshot may replace the membership now: it has no sequence, or its cohort's previous request is applied.
    /// </summary>
    public static async Task<bool> IsTurnAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid importId, CancellationToken ct)
    {
        const string sql = """
            SELECT s.sequence IS NULL OR coalesce(q.applied, 0) >= s.sequence - 1
            FROM snapshots s
            LEFT JOIN cohort_sequences q USING (workspace_id, partner, cohort_id)
            WHERE s.import_id = @importId
            """;
        return await conn.ExecuteScalarAsync<bool>(new CommandDefinition(sql, new { importId }, tx, cancellationToken: ct));
    }

    /// <summary>
    /// Snapshots still staging whose newest chunk (or creation) is older than <paramref name="timeout"/>, or whose import
    /// already ended another way (its message exhausted its retries).
    /// </summary>
    public static async Task<List<StaleSnapshot>> StaleAsync(NpgsqlDataSource dataSource, TimeSpan timeout, CancellationToken ct)
    {
        const string sql = """
            SELECT s.import_id, s.workspace_id, s.cohort_id, c.staged AS chunks_staged, c.chunk_count
            FROM snapshots s
            LEFT JOIN imports i ON i.import_id = s.import_id
            CROSS JOIN LATERAL (
                SELECT count(*) AS staged, max(chunk_count) AS chunk_count, max(staged_at) AS last_at
                FROM snapshot_chunks WHERE import_id = s.import_id
            ) c
            WHERE s.state = 'staging'
              AND (greatest(s.created_at, c.last_at) < now() - @timeout OR coalesce(i.status, 'processing') <> 'processing')
            ORDER BY s.created_at
            LIMIT 100
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return (await conn.QueryAsync<StaleSnapshot>(new CommandDefinition(sql, new { timeout }, cancellationToken: ct))).AsList();
    }
}
