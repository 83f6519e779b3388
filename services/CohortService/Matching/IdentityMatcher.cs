using System.Diagnostics.CodeAnalysis;
using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Matching;

/// <summary>The reasons an identifier matches nobody (shared/API.md, "User matching").</summary>
public static class UnmatchedReason
{
    public const string UnknownExternalId = "unknown_external_id";
    public const string UnknownAlias = "unknown_alias";
    public const string UnknownDeviceId = "unknown_device_id";
    public const string DeviceIdOfIdentifiedUser = "device_id_of_identified_user";
    public const string InvalidIdentifier = "invalid_identifier";
}

public enum IdentifierKind
{
    ExternalId,
    Alias,
    DeviceId,
    Invalid,
}

/// <summary>
/// What became of one identifier occurrence: matched (Ordinal set) or unmatched (Reason set).
/// <see cref="Display"/> is how it appears in an import's unmatched sample (aliases as <c>alias_name:alias_label</c>).
/// </summary>
public readonly record struct IdentifierOutcome(IdentifierKind Kind, string Display, int? Ordinal, string? ExternalId, string? Reason)
{
    public bool Matched => Ordinal is not null;
}

/// <summary>
/// Matches the identifiers of one change set to the live users of a workspace, set-based: one statement per
/// identifier kind (unnest ... WITH ORDINALITY joined to the lookup tables), never one query per identifier.
/// Every occurrence yields exactly one outcome, so matched + unmatched = received; duplicates are separate occurrences.
/// </summary>
public static class IdentityMatcher
{
    public const int MaxIdentifierLength = 512;

    /// <summary>
    /// For a transaction that matches thousands of identifiers against a directory of up to tens of millions of users:
    /// index look-ups (nested loops) are what is cheap, but the default costs (random_page_cost 4, a cold-cache
    /// assumption) make the planner hash the whole users table instead (measured: ~1.2 s per 10,000-identifier chunk
    /// at 1M users instead of tens of milliseconds). SET LOCAL: only that transaction is affected.
    /// </summary>
    public const string IndexLookupPlan = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

    /// <summary>
    /// Non-empty, at most <see cref="MaxIdentifierLength"/> characters, and without U+0000, which PostgreSQL's text
    /// cannot hold: one such identifier would otherwise fail its whole import.
    /// </summary>
    public static bool IsValid(string? value) =>
        !string.IsNullOrEmpty(value) && value.Length <= MaxIdentifierLength && PostgresText.CanStore(value);

    public static bool IsValidAlias([NotNullWhen(true)] UserAlias? alias) => alias is not null && IsValid(alias.AliasName) && IsValid(alias.AliasLabel);

    /// <summary>How an alias appears in an import's unmatched sample.</summary>
    public static string Display(UserAlias? alias) => $"{alias?.AliasName}:{alias?.AliasLabel}";

    /// <summary>
    /// The outcome of an identifier that can name nobody (a missing one shows as <c>null</c>); a U+0000 in it shows as
    /// U+FFFD, since the display is stored in the import's unmatched sample.
    /// </summary>
    public static IdentifierOutcome Invalid(IdentifierKind kind, string? display) =>
        new(kind, display?.Replace('\0', '\uFFFD') ?? "null", null, null, UnmatchedReason.InvalidIdentifier);

    public static async Task<List<IdentifierOutcome>> MatchAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, string workspaceId, CohortChange change, CancellationToken ct)
    {
        var outcomes = new List<IdentifierOutcome>(
            change.ExternalIds.Count + change.Aliases.Count + change.DeviceIds.Count + change.InvalidIdentifiers.Count);

        await MatchExternalIdsAsync(connection, transaction, workspaceId, change.ExternalIds, outcomes, ct);
        await MatchAliasesAsync(connection, transaction, workspaceId, change.Aliases, outcomes, ct);
        await MatchDevicesAsync(connection, transaction, workspaceId, change.DeviceIds, outcomes, ct);
        foreach (var raw in change.InvalidIdentifiers)
        {
            outcomes.Add(Invalid(IdentifierKind.Invalid, raw));
        }

        return outcomes;
    }

    private static async Task MatchExternalIdsAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, string ws, IReadOnlyList<string> ids,
        List<IdentifierOutcome> outcomes, CancellationToken ct)
    {
        const string sql = """
            SELECT i.ord, u.ordinal, u.external_id
            FROM unnest(@values::text[]) WITH ORDINALITY AS i(value, ord)
            LEFT JOIN users u
              ON u.workspace_id = @ws AND u.external_id = i.value COLLATE "C" AND u.deleted_at IS NULL
            """;
        var valid = Partition(ids, IdentifierKind.ExternalId, outcomes, out var start, out var positions);
        if (valid.Count == 0)
        {
            return;
        }

        var rows = await connection.QueryAsync<MatchRow>(new CommandDefinition(
            sql, new { ws, values = valid.ToArray() }, transaction, cancellationToken: ct));
        foreach (var row in rows)
        {
            var slot = positions[(int)row.Ord - 1];
            outcomes[start + slot] = row.Ordinal is { } o
                ? outcomes[start + slot] with { Ordinal = o, ExternalId = row.ExternalId }
                : outcomes[start + slot] with { Reason = UnmatchedReason.UnknownExternalId };
        }
    }

    private static async Task MatchAliasesAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, string ws, IReadOnlyList<UserAlias> aliases,
        List<IdentifierOutcome> outcomes, CancellationToken ct)
    {
        // An alias matches identified and anonymous users alike (rules 1 and 2).
        const string sql = """
            SELECT i.ord, u.ordinal, u.external_id
            FROM unnest(@names::text[], @labels::text[]) WITH ORDINALITY AS i(alias_name, alias_label, ord)
            LEFT JOIN user_aliases a
              ON a.workspace_id = @ws AND a.alias_name = i.alias_name COLLATE "C" AND a.alias_label = i.alias_label COLLATE "C"
            LEFT JOIN users u ON u.workspace_id = @ws AND u.ordinal = a.ordinal AND u.deleted_at IS NULL
            """;
        var start = outcomes.Count;
        var names = new List<string>(aliases.Count);
        var labels = new List<string>(aliases.Count);
        var positions = new List<int>(aliases.Count);
        for (var i = 0; i < aliases.Count; i++)
        {
            var alias = aliases[i];
            var display = Display(alias);
            if (!IsValidAlias(alias))
            {
                outcomes.Add(Invalid(IdentifierKind.Alias, display));
                continue;
            }

            outcomes.Add(new IdentifierOutcome(IdentifierKind.Alias, display, null, null, null));
            names.Add(alias.AliasName);
            labels.Add(alias.AliasLabel);
            positions.Add(i);
        }

        if (names.Count == 0)
        {
            return;
        }

        var rows = await connection.QueryAsync<MatchRow>(new CommandDefinition(
            sql, new { ws, names = names.ToArray(), labels = labels.ToArray() }, transaction, cancellationToken: ct));
        foreach (var row in rows)
        {
            var slot = start + positions[(int)row.Ord - 1];
            outcomes[slot] = row.Ordinal is { } o
                ? outcomes[slot] with { Ordinal = o, ExternalId = row.ExternalId }
                : outcomes[slot] with { Reason = UnmatchedReason.UnknownAlias };
        }
    }

    private static async Task MatchDevicesAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, string ws, IReadOnlyList<string> devices,
        List<IdentifierOutcome> outcomes, CancellationToken ct)
    {
        // A device id only ever matches an anonymous user (rule 3), even one identified after the device was recorded.
        const string sql = """
            SELECT i.ord, u.ordinal, u.external_id, u.identified
            FROM unnest(@values::text[]) WITH ORDINALITY AS i(value, ord)
            LEFT JOIN user_devices d ON d.workspace_id = @ws AND d.device_id = i.value COLLATE "C"
            LEFT JOIN users u ON u.workspace_id = @ws AND u.ordinal = d.ordinal AND u.deleted_at IS NULL
            """;
        var valid = Partition(devices, IdentifierKind.DeviceId, outcomes, out var start, out var positions);
        if (valid.Count == 0)
        {
            return;
        }

        var rows = await connection.QueryAsync<MatchRow>(new CommandDefinition(
            sql, new { ws, values = valid.ToArray() }, transaction, cancellationToken: ct));
        foreach (var row in rows)
        {
            var slot = start + positions[(int)row.Ord - 1];
            outcomes[slot] = row switch
            {
                { Ordinal: null } => outcomes[slot] with { Reason = UnmatchedReason.UnknownDeviceId },
                { Identified: true } => outcomes[slot] with { Reason = UnmatchedReason.DeviceIdOfIdentifiedUser },
                _ => outcomes[slot] with { Ordinal = row.Ordinal, ExternalId = row.ExternalId },
            };
        }
    }

    /// <summary>Adds one pending outcome per value (invalid ones already decided) and returns the valid values to look up.</summary>
    private static List<string> Partition(
        IReadOnlyList<string> values, IdentifierKind kind, List<IdentifierOutcome> outcomes, out int start, out List<int> positions)
    {
        start = outcomes.Count;
        positions = new List<int>(values.Count);
        var valid = new List<string>(values.Count);
        for (var i = 0; i < values.Count; i++)
        {
            var value = values[i];
            if (!IsValid(value))
            {
                outcomes.Add(Invalid(kind, value));
                continue;
            }

            outcomes.Add(new IdentifierOutcome(kind, value, null, null, null));
            valid.Add(value);
            positions.Add(i);
        }

        return valid;
    }

    private sealed class MatchRow
    {
        public long Ord { get; init; }
        public int? Ordinal { get; init; }
        public string? ExternalId { get; init; }
        public bool? Identified { get; init; }
    }
}
