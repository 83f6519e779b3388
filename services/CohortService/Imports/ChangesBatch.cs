using System.Diagnostics;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;
using Dapper;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>What one import of a <see cref="ChangesBatch"/> did.</summary>
public sealed record AppliedImport(ImportStatistics Statistics, int[] Added, int[] Removed, long Version, CohortUpdated? Event);

/// <summary>
/// Applies several change imports of ONE cohort, in order, with set-based statements whose number does not grow with
/// the number of imports: every identifier of the batch is matched in one statement per identifier kind, the current
/// membership of the users they name is read once, each import's net effect is worked out in memory (each import sees
/// the ones before it, each change set the ones before it), and then one insert, one delete and one round trip for
/// every version, change-log row and import row. Each import keeps its own statistics, version (+1 when it changes
/// the cohort) and CohortUpdated, exactly as if it had been applied alone. Matching cost per identifier was never the
/// bottleneck of the 1,000-identifier diff path; the dozen round trips and statements per import were.
/// The caller holds the import rows, the workspace share lock and the cohort row lock.
/// </summary>
public static class ChangesBatch
{
    /// <summary>Nested-loop index lookups, as for snapshot chunks (see SnapshotChunkProcessor.StageAsync).</summary>
    private const string PlannerSettings = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

    public static async Task<AppliedImport[]> ApplyAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, CohortRow cohort, bool created, IReadOnlyList<CohortExportReceived> imports,
        int inlineLimit, CancellationToken ct)
    {
        var matchStart = Stopwatch.GetTimestamp();
        var changes = imports.SelectMany(m => m.Changes ?? []).ToList();
        var combined = new CohortChange
        {
            ExternalIds = [.. changes.SelectMany(c => c.ExternalIds)],
            Aliases = [.. changes.SelectMany(c => c.Aliases)],
            DeviceIds = [.. changes.SelectMany(c => c.DeviceIds)],
            InvalidIdentifiers = [.. changes.SelectMany(c => c.InvalidIdentifiers)],
        };
        await conn.ExecuteAsync(new CommandDefinition(PlannerSettings, transaction: tx, cancellationToken: ct));
        var outcomes = await IdentityMatcher.MatchAsync(conn, tx, cohort.WorkspaceId, combined, ct);
        ImportMetrics.Match(ImportMetrics.Since(matchStart));

        var applyStart = Stopwatch.GetTimestamp();
        var touched = outcomes.Where(o => o.Matched).Select(o => o.Ordinal!.Value).Distinct().ToArray();
        var initial = await CohortRepository.MembersAmongAsync(conn, tx, cohort.Id, touched, ct);
        var members = new HashSet<int>(initial);

        // The matcher returns all external ids, then all aliases, devices and invalid entries, each in input order:
        // change j's outcomes are its slice of each, in that order (as when a change set is matched alone).
        var cursor = new[] { 0, combined.ExternalIds.Count, combined.ExternalIds.Count + combined.Aliases.Count,
            combined.ExternalIds.Count + combined.Aliases.Count + combined.DeviceIds.Count };
        var revived = cohort.Archived;
        var version = cohort.Version;
        var memberCount = cohort.MemberCount;
        var now = DateTimeOffset.UtcNow;
        var pending = new (ImportStatistics Stats, int[] Added, int[] Removed, long Version, long MemberCount, bool Changed)[imports.Count];
        for (var i = 0; i < imports.Count; i++)
        {
            var stats = new ImportStatistics();
            var net = new NetChange();
            foreach (var change in imports[i].Changes ?? [])
            {
                var slice = new List<IdentifierOutcome>(
                    change.ExternalIds.Count + change.Aliases.Count + change.DeviceIds.Count + change.InvalidIdentifiers.Count);
                Take(outcomes, slice, ref cursor[0], change.ExternalIds.Count);
                Take(outcomes, slice, ref cursor[1], change.Aliases.Count);
                Take(outcomes, slice, ref cursor[2], change.DeviceIds.Count);
                Take(outcomes, slice, ref cursor[3], change.InvalidIdentifiers.Count);
                stats.Count(slice);
                foreach (var ordinal in slice.Where(o => o.Matched).Select(o => o.Ordinal!.Value).Distinct())
                {
                    if (change.ShouldRemove)
                    {
                        if (members.Remove(ordinal))
                        {
                            net.Removed([ordinal]);
                        }
                    }
                    else if (members.Add(ordinal))
                    {
                        net.Added([ordinal]);
                    }
                }
            }

            var (added, removed) = (net.AddedOrdinals, net.RemovedOrdinals);
            Array.Sort(added);
            Array.Sort(removed);
            stats.Added = added.Length;
            stats.Removed = removed.Length;
            // Creating or reviving the cohort is a change of the first import only (it is live for the next ones).
            var changed = (i == 0 && (created || revived)) || added.Length > 0 || removed.Length > 0;
            if (changed)
            {
                version++;
                memberCount += added.Length - removed.Length;
            }

            pending[i] = (stats, added, removed, version, memberCount, changed);
        }

        var toInsert = members.Where(o => !initial.Contains(o)).Order().ToArray();
        var toDelete = initial.Where(o => !members.Contains(o)).Order().ToArray();
        await CohortRepository.InsertMembersAsync(conn, tx, cohort.Id, toInsert, ct);
        await CohortRepository.DeleteMembersAsync(conn, tx, cohort.Id, toDelete, ct);

        var inlineOrdinals = pending.Where(p => p.Changed && CohortEvents.IsInline(p.Added, p.Removed, inlineLimit))
            .SelectMany(p => p.Added.Concat(p.Removed)).Distinct().ToArray();
        var externalIds = inlineOrdinals.Length == 0
            ? new Dictionary<int, string?>()
            : await CohortRepository.ExternalIdsAsync(conn, tx, cohort.WorkspaceId, inlineOrdinals, ct);

        var results = new AppliedImport[imports.Count];
        await using var batch = new NpgsqlBatch(conn, tx);
        for (var i = 0; i < imports.Count; i++)
        {
            var p = pending[i];
            CohortUpdated? evt = null;
            if (p.Changed)
            {
                var state = new CohortRow
                {
                    Id = cohort.Id, WorkspaceId = cohort.WorkspaceId, Partner = cohort.Partner, CohortId = cohort.CohortId,
                    Name = cohort.Name, Version = p.Version, MemberCount = p.MemberCount, Archived = false,
                    CreatedAt = cohort.CreatedAt, UpdatedAt = now,
                };
                evt = CohortEvents.Build(
                    state, p.Added, p.Removed, imports[i].ImportId,
                    CohortEvents.IsInline(p.Added, p.Removed, inlineLimit) ? externalIds : null);
                CohortRepository.AddChangeLogEntry(batch, state, p.Added, p.Removed, imports[i].ImportId, now);
            }

            ImportRepository.AddComplete(batch, imports[i].ImportId, p.Stats, cohort.Id, p.Version, evt is null ? null : CohortEvents.Serialize(evt));
            results[i] = new AppliedImport(p.Stats, p.Added, p.Removed, p.Version, evt);
        }

        if (version != cohort.Version)
        {
            cohort.Version = version;
            cohort.MemberCount = memberCount;
            cohort.Archived = false;
            cohort.UpdatedAt = now;
            CohortRepository.AddCohortState(batch, cohort);
        }

        await batch.ExecuteNonQueryAsync(ct);
        ImportMetrics.Apply(ImportMetrics.Since(applyStart));
        return results;
    }

    private static void Take(List<IdentifierOutcome> outcomes, List<IdentifierOutcome> slice, ref int cursor, int count)
    {
        for (var k = 0; k < count; k++)
        {
            slice.Add(outcomes[cursor + k]);
        }

        cursor += count;
    }
}
