using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Archives a cohort: every member leaves (recorded in the change log), the cohort is hidden from lists and counts as
/// empty everywhere. Archiving an unknown or already archived cohort changes nothing.
/// </summary>
public sealed class ArchiveImportHandler(IOptions<CohortsOptions> options) : IImportHandler
{
    public CohortExportKind Kind => CohortExportKind.Archive;

    public async Task<ImportResult> ApplyAsync(ImportScope scope, CancellationToken ct)
    {
        var m = scope.Message;
        var (conn, tx) = (scope.Connection, scope.Transaction);
        await CohortRepository.LockWorkspaceSharedAsync(conn, tx, m.WorkspaceId, ct);
        var cohort = await CohortRepository.LockCohortAsync(conn, tx, m.WorkspaceId, m.Partner, m.CohortId, ct);
        if (cohort is null || cohort.Archived)
        {
            return new ImportResult(cohort, false, [], []);
        }

        var removed = await CohortRepository.RemoveAllMembersAsync(conn, tx, cohort, ct);
        scope.Statistics.Removed = removed.Length;
        cohort.Archived = true;
        await CohortRepository.CommitVersionAsync(
            conn, tx, cohort, [], removed, m.ImportId, DateTimeOffset.UtcNow, options.Value.ChangeLogSetLimit, ct);
        return new ImportResult(cohort, true, [], removed);
    }
}
