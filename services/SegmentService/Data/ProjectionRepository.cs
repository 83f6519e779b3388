using System.Runtime.CompilerServices;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.SegmentService.Bitmaps;
using CohortBridge.SegmentService.Filters;
using CohortBridge.SegmentService.Projections;
using CohortBridge.ServiceDefaults;
using Dapper;
using Npgsql;
using NpgsqlTypes;

namespace CohortBridge.SegmentService.Data;

/// <summary>The persisted copy of the projections: cohort bitmaps and the user directory.</summary>
public sealed class ProjectionRepository(NpgsqlDataSource dataSource)
{
    /// <summary>Stores a cohort's state unless the table already holds a newer version (replicas share it).</summary>
    public async Task SaveCohortAsync(string workspaceId, CohortProjection cohort, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO cohort_bitmaps (workspace_id, partner, cohort_id, version, name, archived, member_count, bitmap, updated_at)
            VALUES (@WorkspaceId, @Partner, @CohortId, @Version, @Name, @Archived, @MemberCount, @Bitmap, @UpdatedAt)
            ON CONFLICT (workspace_id, partner, cohort_id) DO UPDATE
               SET version = excluded.version, name = excluded.name, archived = excluded.archived,
                   member_count = excluded.member_count, bitmap = excluded.bitmap, updated_at = excluded.updated_at
             WHERE cohort_bitmaps.version < excluded.version
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new
        {
            WorkspaceId = workspaceId,
            cohort.Key.Partner,
            cohort.Key.CohortId,
            cohort.Version,
            cohort.Name,
            cohort.Archived,
            MemberCount = cohort.Members.Cardinality,
            Bitmap = cohort.Members.Serialize(),
            cohort.UpdatedAt,
        }, cancellationToken: ct));
    }

    public async IAsyncEnumerable<(string WorkspaceId, CohortProjection Cohort)> LoadCohortsAsync(
        [EnumeratorCancellation] CancellationToken ct)
    {
        const string sql = """
            SELECT workspace_id, partner, cohort_id, version, name, archived, bitmap, updated_at
              FROM cohort_bitmaps
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand(sql, conn);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            var key = new CohortKey(reader.GetString(1), reader.GetString(2));
            var bitmap = RoaringBitmap.Deserialize(reader.GetFieldValue<byte[]>(6));
            yield return (reader.GetString(0), new CohortProjection(
                key, reader.GetInt64(3), reader.GetString(4), reader.GetBoolean(5), bitmap,
                reader.GetFieldValue<DateTimeOffset>(7)));
        }
    }

    /// <summary>
    /// Upserts users' identities (binary COPY into a staging table, then one INSERT … ON CONFLICT) by the rules of
    /// <see cref="UserDirectory.Apply(IEnumerable{VersionedUser})"/>: an entry with a lower directory version than the
    /// stored one (0 counts as current), or for a user stored as deleted, leaves the row as it is.
    /// </summary>
    public async Task SaveDirectoryUsersAsync(string workspaceId, IReadOnlyCollection<VersionedUser> users, bool markLoaded, CancellationToken ct)
    {
        const string createStaging = """
            CREATE TEMP TABLE directory_staging (
                ordinal integer, external_id text, aliases jsonb, device_ids jsonb, identified boolean, deleted boolean,
                directory_version bigint, position integer
            ) ON COMMIT DROP
            """;
        const string copy = """
            COPY directory_staging (ordinal, external_id, aliases, device_ids, identified, deleted, directory_version, position)
            FROM STDIN (FORMAT BINARY)
            """;
        const string merge = """
            INSERT INTO directory_users (workspace_id, ordinal, external_id, aliases, device_ids, identified, deleted, directory_version)
            SELECT DISTINCT ON (ordinal) @WorkspaceId, ordinal, external_id, aliases, device_ids, identified, deleted, directory_version
              FROM directory_staging
             ORDER BY ordinal, position DESC
            ON CONFLICT (workspace_id, ordinal) DO UPDATE
               SET external_id = excluded.external_id, aliases = excluded.aliases, device_ids = excluded.device_ids,
                   identified = excluded.identified, deleted = excluded.deleted,
                   directory_version = GREATEST(directory_users.directory_version, excluded.directory_version)
             WHERE NOT directory_users.deleted
               AND (excluded.directory_version = 0 OR excluded.directory_version >= directory_users.directory_version)
            """;

        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(createStaging, transaction: tx, cancellationToken: ct));
        await using (var writer = await conn.BeginBinaryImportAsync(copy, ct))
        {
            // Later entries for one ordinal win: DISTINCT ON keeps the highest position.
            var position = 0;
            foreach (var (user, version) in users)
            {
                await writer.StartRowAsync(ct);
                await writer.WriteAsync(user.Ordinal, NpgsqlDbType.Integer, ct);
                if (user.ExternalId is null)
                {
                    await writer.WriteNullAsync(ct);
                }
                else
                {
                    await writer.WriteAsync(user.ExternalId, NpgsqlDbType.Text, ct);
                }

                await writer.WriteAsync(JsonSerializer.Serialize(user.Aliases, PlatformJson.Options), NpgsqlDbType.Jsonb, ct);
                await writer.WriteAsync(JsonSerializer.Serialize(user.DeviceIds, PlatformJson.Options), NpgsqlDbType.Jsonb, ct);
                await writer.WriteAsync(user.Identified, NpgsqlDbType.Boolean, ct);
                await writer.WriteAsync(user.Deleted, NpgsqlDbType.Boolean, ct);
                await writer.WriteAsync(version, NpgsqlDbType.Bigint, ct);
                await writer.WriteAsync(position++, NpgsqlDbType.Integer, ct);
            }

            await writer.CompleteAsync(ct);
        }

        await conn.ExecuteAsync(new CommandDefinition(merge, new { WorkspaceId = workspaceId }, tx, cancellationToken: ct));
        if (markLoaded)
        {
            await MarkDirectoriesLoadedAsync(conn, tx, [workspaceId], ct);
        }

        await tx.CommitAsync(ct);
    }

    /// <summary>Records that this replica holds the whole directory of each workspace (start-up need not read it).</summary>
    public async Task MarkDirectoriesLoadedAsync(IReadOnlyCollection<string> workspaceIds, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await MarkDirectoriesLoadedAsync(conn, null, workspaceIds, ct);
    }

    private static Task MarkDirectoriesLoadedAsync(
        NpgsqlConnection conn, NpgsqlTransaction? tx, IReadOnlyCollection<string> workspaceIds, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO directory_workspaces (workspace_id, loaded_at)
            SELECT w, now() FROM unnest(@WorkspaceIds::text[]) AS w
            ON CONFLICT (workspace_id) DO UPDATE SET loaded_at = excluded.loaded_at
            """;
        return conn.ExecuteAsync(new CommandDefinition(sql, new { WorkspaceIds = workspaceIds.ToArray() }, tx, cancellationToken: ct));
    }

    public async Task<HashSet<string>> LoadedDirectoryWorkspacesAsync(CancellationToken ct)
    {
        const string sql = "SELECT workspace_id FROM directory_workspaces";
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var rows = await conn.QueryAsync<string>(new CommandDefinition(sql, cancellationToken: ct));
        return rows.ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>
    /// Streams every user's identity, deleted users included (their tombstones keep late entries from bringing them
    /// back after a restart), ordered by workspace.
    /// </summary>
    public async IAsyncEnumerable<(string WorkspaceId, VersionedUser User)> LoadDirectoryAsync(
        [EnumeratorCancellation] CancellationToken ct)
    {
        const string sql = """
            SELECT workspace_id, ordinal, external_id, aliases::text, device_ids::text, identified, deleted, directory_version
              FROM directory_users
             ORDER BY workspace_id
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand(sql, conn);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            var user = new DirectoryUser
            {
                Ordinal = reader.GetInt32(1),
                ExternalId = reader.IsDBNull(2) ? null : reader.GetString(2),
                Aliases = JsonSerializer.Deserialize<List<UserAlias>>(reader.GetString(3), PlatformJson.Options) ?? [],
                DeviceIds = JsonSerializer.Deserialize<List<string>>(reader.GetString(4), PlatformJson.Options) ?? [],
                Identified = reader.GetBoolean(5),
                Deleted = reader.GetBoolean(6),
            };
            yield return (reader.GetString(0), new VersionedUser(user, reader.GetInt64(7)));
        }
    }
}
