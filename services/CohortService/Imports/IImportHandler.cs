using CohortBridge.CohortService.Data;
using CohortBridge.Contracts;
using Npgsql;

namespace CohortBridge.CohortService.Imports;

/// <summary>
/// Applies one kind of <see cref="CohortExportReceived"/> inside the import's transaction (the import row is locked).
/// Handlers are picked by <see cref="Kind"/>; a kind without a handler is recorded as a failed import.
/// </summary>
public interface IImportHandler
{
    CohortExportKind Kind { get; }

    Task<ImportResult> ApplyAsync(ImportScope scope, CancellationToken ct);
}

/// <summary>The transaction and message an import handler works in.</summary>
public sealed class ImportScope(NpgsqlConnection connection, NpgsqlTransaction transaction, CohortExportReceived message)
{
    public NpgsqlConnection Connection { get; } = connection;
    public NpgsqlTransaction Transaction { get; } = transaction;
    public CohortExportReceived Message { get; } = message;
    public ImportStatistics Statistics { get; } = new();

    /// <summary>Time spent matching identifiers (handlers add to it; the apply-stage metric excludes it).</summary>
    public TimeSpan MatchTime { get; set; }
}

/// <summary>
/// What an import did: the cohort it touched (null when none), whether that produced a new version, and the net
/// added/removed ordinals of that version.
/// </summary>
public sealed record ImportResult(CohortRow? Cohort, bool NewVersion, int[] Added, int[] Removed)
{
    public static readonly ImportResult Nothing = new(null, false, [], []);
}
