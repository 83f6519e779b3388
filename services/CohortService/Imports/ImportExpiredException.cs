using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// An import accepted longer than <see cref="CohortsOptions.ImportRetention"/> ago that has no import row: the sweeper
/// may have deleted its row, so it may have been applied already, and applying it again could, for instance, re-add a
/// user removed since. It is refused to the error queue, not retried and not acknowledged as done, so the operator
/// who moved it back sees why and still has its content.
/// </summary>
public sealed class ImportExpiredException(CohortExportReceived message, TimeSpan retention) : UnretriableMessageException(
    $"Import {message.ImportId} for cohort {message.CohortId} of {message.WorkspaceId} was accepted at {message.OccurredAt.UtcDateTime:O}, " +
    $"more than Cohorts:ImportRetention ({retention}) ago, and its record is gone, so whether it was applied cannot be told; it is not applied.")
{
    public Guid ImportId { get; } = message.ImportId;
}
