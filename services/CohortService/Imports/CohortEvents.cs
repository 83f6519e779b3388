using System.Text.Json;
using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>Builds CohortUpdated events and (de)serialises them for storage (imports.pending_event, outbox).</summary>
public static class CohortEvents
{
    private static readonly JsonSerializerOptions StorageJson = new(JsonSerializerDefaults.Web);

    public static async Task<CohortUpdated> BuildAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, CohortRow cohort, int[] added, int[] removed, Guid? importId,
        int inlineLimit, CancellationToken ct)
    {
        var externalIds = IsInline(added, removed, inlineLimit)
            ? await CohortRepository.ExternalIdsAsync(conn, tx, cohort.WorkspaceId, added.Concat(removed), ct)
            : null;
        return Build(cohort, added, removed, importId, externalIds);
    }

    /// <summary>Whether a change this size is carried inline (Added/Removed) rather than flagged MustReread.</summary>
    public static bool IsInline(int[] added, int[] removed, int inlineLimit) => added.Length + removed.Length <= inlineLimit;

    /// <summary>
    /// The event of one version: inline when <paramref name="externalIds"/> (covering every added and removed ordinal)
    /// is given, otherwise counts only and MustReread.
    /// </summary>
    public static CohortUpdated Build(
        CohortRow cohort, int[] added, int[] removed, Guid? importId, IReadOnlyDictionary<int, string?>? externalIds) => new()
    {
        WorkspaceId = cohort.WorkspaceId,
        Partner = cohort.Partner,
        CohortId = cohort.CohortId,
        CohortName = cohort.Name,
        Version = cohort.Version,
        MemberCount = cohort.MemberCount,
        AddedCount = added.Length,
        RemovedCount = removed.Length,
        Added = externalIds is null ? null : Refs(added, externalIds),
        Removed = externalIds is null ? null : Refs(removed, externalIds),
        MustReread = externalIds is null,
        Archived = cohort.Archived,
        ImportId = importId,
        OccurredAt = cohort.UpdatedAt,
    };

    private static List<CohortMemberRef> Refs(int[] ordinals, IReadOnlyDictionary<int, string?> externalIds) =>
        [.. ordinals.Order().Select(o => new CohortMemberRef { Ordinal = o, ExternalId = externalIds.GetValueOrDefault(o) })];

    public static string Serialize(CohortUpdated e) => JsonSerializer.Serialize(e, StorageJson);

    public static CohortUpdated Deserialize(string json) =>
        JsonSerializer.Deserialize<CohortUpdated>(json, StorageJson) ?? throw new InvalidOperationException("Stored CohortUpdated is null.");
}
