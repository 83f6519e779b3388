using CohortBridge.Contracts;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// A change import without change sets: the partner's credentials check. It is completed with zero counts, touches no
/// cohort and makes no version. Change imports with change sets never come here: <see cref="ImportProcessor"/> applies
/// them set-based, several at once (<see cref="ChangesBatch"/>).
/// </summary>
public sealed class ChangesImportHandler : IImportHandler
{
    public CohortExportKind Kind => CohortExportKind.Changes;

    public Task<ImportResult> ApplyAsync(ImportScope scope, CancellationToken ct) =>
        scope.Message.Changes is { Count: > 0 }
            ? throw new InvalidOperationException("Change imports with change sets are applied by ChangesBatch.")
            : Task.FromResult(ImportResult.Nothing);
}
