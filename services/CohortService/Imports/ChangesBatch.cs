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
/// One change import matched ahead of its turn: the outcomes of each change set, and the workspace's directory_version
/// they were read at (an unchanged version when the import is applied proves they still hold).
/// </summary>
public sealed record MatchedChanges(long DirectoryVersion, IReadOnlyList<IdentifierOutcome>[] PerChange);

/// <summary>
/// Applies several change imports of ONE cohort, in order, with set-based statements whose number does not grow with
/// the number of imports: the identifiers were matched (<see cref="PrepareAsync"/>, as soon as each import arrived,
/// side by side, while it waited for its turn; or here, one statement per identifier kind for the whole batch, when a
/// directory write came in between), the current membership of the users they name is read once, each import's net
/// effect is worked out in memory (each import sees the ones before it, each change set the ones before it), and
/// then one COPY, one delete and one round trip for every version, change-log row and import row. Each import keeps
/// its own statistics, version (+1 when it changes the cohort) and CohortUpdated, exactly as if applied alone.
/// Only this last part runs one cohort at a time, which is why matching is moved out of it.
/// The caller holds the import rows, the workspace share lock and the cohort row lock.
/// </summary>
public static class ChangesBatch
{
    /// <summary>Matches one change import in a short transaction of its own, under the workspace share lock.</summary>
    public static async Task<MatchedChanges> PrepareAsync(NpgsqlDataSource dataSource, CohortExportReceived import, CancellationToken ct)
    {
        var start = Stopwatch.GetTimestamp();
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var directoryVersion = await CohortRepository.LockWorkspaceSharedAsync(conn, tx, import.WorkspaceId, ct);
        var perChange = (await MatchAsync(conn, tx, import.WorkspaceId, [import], ct))[0];
        await tx.CommitAsync(ct);
        ImportMetrics.Match(ImportMetrics.Since(start));
        return new MatchedChanges(directoryVersion, perChange);
    }

    /// <summary>
    /// Matches every change set of <paramref name="imports"/> with one statement per identifier kind; returns the
    /// outcomes per import, per change set (in the order a change set matched alone gives them).
    /// </summary>
    private static async Task<IReadOnlyList<IdentifierOutcome>[][]> MatchAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, string workspaceId, IReadOnlyList<CohortExportReceived> imports, CancellationToken ct)
    {
        var changes = imports.SelectMany(m => m.Changes ?? []).ToList();
        var combined = new CohortChange
        {
            ExternalIds = [.. changes.SelectMany(c => c.ExternalIds)],
            Aliases = [.. changes.SelectMany(c => c.Aliases)],
            DeviceIds = [.. changes.SelectMany(c => c.DeviceIds)],
            InvalidIdentifiers = [.. changes.SelectMany(c => c.InvalidIdentifiers)],
        };
        await conn.ExecuteAsync(new CommandDefinition(IdentityMatcher.IndexLookupPlan, transaction: tx, cancellationToken: ct));
        var outcomes = await IdentityMatcher.MatchAsync(conn, tx, workspaceId, combined, ct);

        // The matcher returns all external ids, then all aliases, devices and invalid entries, each in input order:
        // change j's outcomes are its slice of each, in that order (as when a change set is matched alone).
        var cursor = new[] { 0, combined.ExternalIds.Count, combined.ExternalIds.Count + combined.Aliases.Count,
            combined.ExternalIds.Count + combined.Aliases.Count + combined.DeviceIds.Count };
        var result = new IReadOnlyList<IdentifierOutcome>[imports.Count][];
        for (var i = 0; i < imports.Count; i++)
        {
            var own = imports[i].Changes ?? [];
            result[i] = new IReadOnlyList<IdentifierOutcome>[own.Count];
            for (var j = 0; j < own.Count; j++)
            {
                var change = own[j];
                var slice = new List<IdentifierOutcome>(
                    change.ExternalIds.Count + change.Aliases.Count + change.DeviceIds.Count + change.InvalidIdentifiers.Count);
                Take(outcomes, slice, ref cursor[0], change.ExternalIds.Count);
                Take(outcomes, slice, ref cursor[1], change.Aliases.Count);
                Take(outcomes, slice, ref cursor[2], change.DeviceIds.Count);
                Take(outcomes, slice, ref cursor[3], change.InvalidIdentifiers.Count);
                result[i][j] = slice;
            }
        }

        return result;
    }

    /// <summary>
    /// Applies <paramref name="imports"/> (in order) to <paramref name="cohort"/>. <paramref name="prepared"/> holds,
    /// per import, its <see cref="PrepareAsync"/> result or null; a result read at another directory version than
    /// <paramref name="directoryVersion"/> (the caller's, under its share lock) is matched again.
    /// </summary>
    public static async Task<AppliedImport[]> ApplyAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, CohortRow cohort, bool created, IReadOnlyList<CohortExportReceived> imports,
        IReadOnlyList<MatchedChanges?> prepared, long directoryVersion, int inlineLimit, CancellationToken ct)
    {
        var perImport = new IReadOnlyList<IdentifierOutcome>[imports.Count][];
        var stale = new List<int>();
        for (var i = 0; i < imports.Count; i++)
        {
            if (prepared[i] is { } p && p.DirectoryVersion == directoryVersion)
            {
                perImport[i] = p.PerChange;
            }
            else
            {
                stale.Add(i);
            }
        }

        if (stale.Count > 0)
        {
            var matchStart = Stopwatch.GetTimestamp();
            var matched = await MatchAsync(conn, tx, cohort.WorkspaceId, [.. stale.Select(i => imports[i])], ct);
            for (var k = 0; k < stale.Count; k++)
            {
                perImport[stale[k]] = matched[k];
            }

            ImportMetrics.Match(ImportMetrics.Since(matchStart));
        }

        var applyStart = Stopwatch.GetTimestamp();
        // Every user an import names, with the external id matching read (the events need no second look-up).
        var externalIds = new Dictionary<int, string?>();
        foreach (var o in perImport.SelectMany(p => p).SelectMany(c => c))
        {
            if (o.Ordinal is { } ordinal)
            {
                externalIds[ordinal] = o.ExternalId;
            }
        }

        var touched = externalIds.Keys.Order().ToArray();
        var initial = await CohortRepository.MembersAmongAsync(conn, tx, cohort.Id, touched, ct);
        var members = new HashSet<int>(initial);

        var revived = cohort.Archived;
        var version = cohort.Version;
        var memberCount = cohort.MemberCount;
        var now = DateTimeOffset.UtcNow;
        var pending = new (ImportStatistics Stats, int[] Added, int[] Removed, long Version, long MemberCount, bool Changed)[imports.Count];
        for (var i = 0; i < imports.Count; i++)
        {
            var stats = new ImportStatistics();
            var net = new NetChange();
            var changes = imports[i].Changes ?? [];
            for (var j = 0; j < changes.Count; j++)
            {
                var change = changes[j];
                var slice = perImport[i][j];
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
        await CohortRepository.CopyMembersAsync(conn, cohort.Id, toInsert, ct);
        await CohortRepository.DeleteMembersAsync(conn, tx, cohort.Id, toDelete, ct);

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

    private static void Take(IReadOnlyList<IdentifierOutcome> outcomes, List<IdentifierOutcome> slice, ref int cursor, int count)
    {
        for (var k = 0; k < count; k++)
        {
            slice.Add(outcomes[cursor + k]);
        }

        cursor += count;
    }
}
