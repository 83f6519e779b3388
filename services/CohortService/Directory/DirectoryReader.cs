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

    public static async Task<List<DirectoryUser>> UsersAsync(
        NpgsqlConnection conn, NpgsqlTransaction? tx, string ws, int[] ordinals, CancellationToken ct)
    {
        const string sql = Select + " WHERE u.workspace_id = @ws AND u.ordinal = ANY(@ordinals) ORDER BY u.ordinal";
        var rows = await conn.QueryAsync<UserRow>(new CommandDefinition(sql, new { ws, ordinals }, tx, cancellationToken: ct));
        return rows.Select(r => r.ToDirectoryUser()).ToList();
    }

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
