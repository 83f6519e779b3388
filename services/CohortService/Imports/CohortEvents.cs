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
        var inline = added.Length + removed.Length <= inlineLimit;
        IReadOnlyList<CohortMemberRef>? addedRefs = null;
        IReadOnlyList<CohortMemberRef>? removedRefs = null;
        if (inline)
        {
            var externalIds = await CohortRepository.ExternalIdsAsync(conn, tx, cohort.WorkspaceId, added.Concat(removed), ct);
            addedRefs = Refs(added, externalIds);
            removedRefs = Refs(removed, externalIds);
        }

        return new CohortUpdated
        {
            WorkspaceId = cohort.WorkspaceId,
            Partner = cohort.Partner,
            CohortId = cohort.CohortId,
            CohortName = cohort.Name,
            Version = cohort.Version,
            MemberCount = cohort.MemberCount,
            AddedCount = added.Length,
            RemovedCount = removed.Length,
            Added = addedRefs,
            Removed = removedRefs,
            MustReread = !inline,
            Archived = cohort.Archived,
            ImportId = importId,
            OccurredAt = cohort.UpdatedAt,
        };
    }

    private static List<CohortMemberRef> Refs(int[] ordinals, Dictionary<int, string?> externalIds) =>
        [.. ordinals.Order().Select(o => new CohortMemberRef { Ordinal = o, ExternalId = externalIds.GetValueOrDefault(o) })];

    public static string Serialize(CohortUpdated e) => JsonSerializer.Serialize(e, StorageJson);

    public static CohortUpdated Deserialize(string json) =>
        JsonSerializer.Deserialize<CohortUpdated>(json, StorageJson) ?? throw new InvalidOperationException("Stored CohortUpdated is null.");
}
