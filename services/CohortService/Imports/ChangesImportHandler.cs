using System.Diagnostics;
using CohortBridge.CohortService.Data;
using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Ordered change sets: each set is matched (one statement per identifier kind) and applied (one statement) before
/// the next, so later sets see earlier ones. Only existing users are added or removed.
/// </summary>
public sealed class ChangesImportHandler : IImportHandler
{
    public CohortExportKind Kind => CohortExportKind.Changes;

    public async Task<ImportResult> ApplyAsync(ImportScope scope, CancellationToken ct)
    {
        var m = scope.Message;
        var changes = m.Changes ?? [];
        if (changes.Count == 0)
        {
            // A credentials check: completed with zero counts, no cohort touched, no version.
            return ImportResult.Nothing;
        }

        var (conn, tx) = (scope.Connection, scope.Transaction);
        await CohortRepository.LockWorkspaceSharedAsync(conn, tx, m.WorkspaceId, ct);
        var (cohort, created) = await CohortRepository.LockOrCreateCohortAsync(
            conn, tx, m.WorkspaceId, m.Partner, m.CohortId, m.CohortId, null, ct);
        var revived = cohort.Archived;
        cohort.Archived = false;

        var net = new NetChange();
        foreach (var change in changes)
        {
            var matchStart = Stopwatch.GetTimestamp();
            var outcomes = await IdentityMatcher.MatchAsync(conn, tx, m.WorkspaceId, change, ct);
            scope.MatchTime += ImportMetrics.Since(matchStart);
            scope.Statistics.Count(outcomes);
            var ordinals = outcomes.Where(o => o.Matched).Select(o => o.Ordinal!.Value).Distinct().ToArray();
            if (change.ShouldRemove)
            {
                net.Removed(await CohortRepository.RemoveMembersAsync(conn, tx, cohort, ordinals, ct));
            }
            else
            {
                net.Added(await CohortRepository.AddMembersAsync(conn, tx, cohort, ordinals, ct));
            }
        }

        ImportMetrics.Match(scope.MatchTime);
        var (added, removed) = (net.AddedOrdinals, net.RemovedOrdinals);
        scope.Statistics.Added = added.Length;
        scope.Statistics.Removed = removed.Length;
        var changed = created || revived || added.Length > 0 || removed.Length > 0;
        if (changed)
        {
            await CohortRepository.CommitVersionAsync(conn, tx, cohort, added, removed, m.ImportId, DateTimeOffset.UtcNow, ct);
        }

        return new ImportResult(cohort, changed, added, removed);
    }
}
