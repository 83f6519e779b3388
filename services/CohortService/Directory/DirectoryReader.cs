using CohortBridge.Contracts;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Directory;

/// <summary>Reads users with their full current identity (for UserDirectoryChanged and the directory stream).</summary>
public static class DirectoryReader
{
    private const string Select = """
        SELECT u.ordinal, u.external_id, u.identified, u.deleted_at IS NOT NULL AS deleted,
               ARRAY(SELECT a.alias_name FROM user_aliases a WHERE a.workspace_id = u.workspace_id AND a.ordinal = u.ordinal
                     ORDER BY a.alias_name, a.alias_label) AS alias_names,
               ARRAY(SELECT a.alias_label FROM user_aliases a WHERE a.workspace_id = u.workspace_id AND a.ordinal = u.ordinal
                     ORDER BY a.alias_name, a.alias_label) AS alias_labels,
               ARRAY(SELECT d.device_id FROM user_devices d WHERE d.workspace_id = u.workspace_id AND d.ordinal = u.ordinal
                     ORDER BY d.device_id) AS device_ids
        FROM users u
        """;

    /// <summary>
    /// The workspace's directory version, read before the users: under read committed each later statement sees at
    /// least this state, so the identities read after it are at least this recent (see
    /// <see cref="UserDirectoryChanged.DirectoryVersion"/>). Every directory write moves it on under the workspace lock.
    /// </summary>
    public const string VersionSql = "SELECT COALESCE((SELECT directory_version FROM workspaces WHERE workspace_id = @ws), 0);";

    /// <summary>
    /// The users with these ordinals, in ordinal order, and the directory version read before them (one statement
    /// before the three set-based reads of users, aliases and device ids, all in one round trip), by an ordinal range
    /// when the ordinals are dense (a bulk upload's new users), else by the ordinal list.
    /// </summary>
    public static async Task<(long Version, List<DirectoryUser> Users)> UsersAsync(
        NpgsqlConnection conn, NpgsqlTransaction? tx, string ws, int[] ordinals, CancellationToken ct)
    {
        if (ordinals.Length == 0)
        {
            return (0, []);
        }

        const string byRange = VersionSql + """

            SELECT ordinal, external_id, identified, deleted_at IS NOT NULL AS deleted FROM users
            WHERE workspace_id = @ws AND ordinal BETWEEN @lo AND @hi ORDER BY ordinal;
            SELECT ordinal, alias_name, alias_label FROM user_aliases
            WHERE workspace_id = @ws AND ordinal BETWEEN @lo AND @hi ORDER BY ordinal, alias_name, alias_label;
            SELECT ordinal, device_id FROM user_devices
            WHERE workspace_id = @ws AND ordinal BETWEEN @lo AND @hi ORDER BY ordinal, device_id;
            """;
        const string byList = VersionSql + """

            SELECT ordinal, external_id, identified, deleted_at IS NOT NULL AS deleted FROM users
            WHERE workspace_id = @ws AND ordinal = ANY(@ordinals) ORDER BY ordinal;
            SELECT ordinal, alias_name, alias_label FROM user_aliases
            WHERE workspace_id = @ws AND ordinal = ANY(@ordinals) ORDER BY ordinal, alias_name, alias_label;
            SELECT ordinal, device_id FROM user_devices
            WHERE workspace_id = @ws AND ordinal = ANY(@ordinals) ORDER BY ordinal, device_id;
            """;
        var (lo, hi) = (ordinals.Min(), ordinals.Max());
        var dense = (long)hi - lo + 1 <= 2L * ordinals.Length;
        await using var results = await conn.QueryMultipleAsync(new CommandDefinition(
            dense ? byRange : byList, new { ws, lo, hi, ordinals }, tx, cancellationToken: ct));
        var version = await results.ReadSingleAsync<long>();
        var users = (await results.ReadAsync<UserRow>()).AsList();
        var aliases = (await results.ReadAsync<(int Ordinal, string AliasName, string AliasLabel)>()).AsList();
        var devices = (await results.ReadAsync<(int Ordinal, string DeviceId)>()).AsList();

        var wanted = dense ? new HashSet<int>(ordinals) : null;
        var list = new List<DirectoryUser>(ordinals.Length);
        int a = 0, d = 0;
        foreach (var u in users)
        {
            while (a < aliases.Count && aliases[a].Ordinal < u.Ordinal)
            {
                a++;
            }

            var userAliases = new List<UserAlias>();
            for (; a < aliases.Count && aliases[a].Ordinal == u.Ordinal; a++)
            {
                userAliases.Add(new UserAlias { AliasName = aliases[a].AliasName, AliasLabel = aliases[a].AliasLabel });
            }

            while (d < devices.Count && devices[d].Ordinal < u.Ordinal)
            {
                d++;
            }

            var userDevices = new List<string>();
            for (; d < devices.Count && devices[d].Ordinal == u.Ordinal; d++)
            {
                userDevices.Add(devices[d].DeviceId);
            }

            if (wanted is null || wanted.Contains(u.Ordinal))
            {
                list.Add(new DirectoryUser
                {
                    Ordinal = u.Ordinal,
                    ExternalId = u.ExternalId,
                    Identified = u.Identified,
                    Deleted = u.Deleted,
                    Aliases = userAliases,
                    DeviceIds = userDevices,
                });
            }
        }

        return (version, list);
    }

    /// <summary>The workspace's directory version (0 for a workspace without one), to read before a whole-directory read.</summary>
    public static Task<long> VersionAsync(NpgsqlConnection conn, string ws, CancellationToken ct) =>
        conn.ExecuteScalarAsync<long>(new CommandDefinition(VersionSql, new { ws }, cancellationToken: ct));

    /// <summary>Every user of the workspace (deleted ones flagged), in ordinal order, streamed from one query.</summary>
    public static async IAsyncEnumerable<DirectoryUser> AllAsync(
        NpgsqlConnection conn, string ws, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        const string sql = Select + " WHERE u.workspace_id = @ws ORDER BY u.ordinal";
        await using var reader = await conn.ExecuteReaderAsync(new CommandDefinition(
            sql, new { ws }, flags: CommandFlags.None, cancellationToken: ct));
        var parser = reader.GetRowParser<UserRow>();
        while (await reader.ReadAsync(ct))
        {
            yield return parser(reader).ToDirectoryUser();
        }
    }

    private sealed class UserRow
    {
        public int Ordinal { get; init; }
        public string? ExternalId { get; init; }
        public bool Identified { get; init; }
        public bool Deleted { get; init; }
        public string[] AliasNames { get; init; } = [];
        public string[] AliasLabels { get; init; } = [];
        public string[] DeviceIds { get; init; } = [];

        public DirectoryUser ToDirectoryUser() => new()
        {
            Ordinal = Ordinal,
            ExternalId = ExternalId,
            Identified = Identified,
            Deleted = Deleted,
            Aliases = [.. AliasNames.Zip(AliasLabels, (n, l) => new UserAlias { AliasName = n, AliasLabel = l })],
            DeviceIds = DeviceIds,
        };
    }
}
