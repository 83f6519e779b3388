using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Microsoft.Extensions.Options;

namespace CohortBridge.CohortService.Imports;

/// <summary>Creates or renames a cohort (a name call on an archived cohort brings it back, empty).</summary>
public sealed class NameImportHandler(IOptions<CohortsOptions> options) : IImportHandler
{
    public CohortExportKind Kind => CohortExportKind.Name;

    public async Task<ImportResult> ApplyAsync(ImportScope scope, CancellationToken ct)
    {
        var m = scope.Message;
        var name = string.IsNullOrWhiteSpace(m.Name) ? m.CohortId : m.Name;
        var (conn, tx) = (scope.Connection, scope.Transaction);
        await CohortRepository.LockWorkspaceSharedAsync(conn, tx, m.WorkspaceId, ct);
        var (cohort, created) = await CohortRepository.LockOrCreateCohortAsync(
            conn, tx, m.WorkspaceId, m.Partner, m.CohortId, name, m.CreatedAt?.ToUniversalTime(), ct);
        var changed = created || cohort.Archived || !string.Equals(cohort.Name, name, StringComparison.Ordinal);
        if (changed)
        {
            cohort.Name = name;
            cohort.Archived = false;
            await CohortRepository.CommitVersionAsync(
                conn, tx, cohort, [], [], m.ImportId, DateTimeOffset.UtcNow, options.Value.ChangeLogSetLimit, ct);
        }

        return new ImportResult(cohort, changed, [], []);
    }
}
