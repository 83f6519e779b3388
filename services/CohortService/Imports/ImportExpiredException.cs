using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// An import without an import row, accepted before the imports the sweeper has deleted after
/// <see cref="CohortsOptions.ImportRetention"/>: its row may be one of them, so it may have been applied already, and
/// applying it again could, for instance, re-add a user removed since. It is refused to the error queue, not retried
/// and not acknowledged as done, so the operator who moved it back sees why and still has its content.
/// </summary>
public sealed class ImportExpiredException(CohortExportReceived message, TimeSpan retention) : UnretriableMessageException(
    $"Import {message.ImportId} for cohort {message.CohortId} of {message.WorkspaceId} was accepted at {message.OccurredAt.UtcDateTime:O}, " +
    $"before the imports deleted after Cohorts:ImportRetention (now {retention}), and its record is gone, so whether it was applied cannot be told; it is not applied.")
{
    public Guid ImportId { get; } = message.ImportId;
}
