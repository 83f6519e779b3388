namespace CohortBridge.Contracts;

/// <summary>
/// Published by ImportGateway once a partner request is authenticated and validated.
/// Exactly one of <see cref="Name"/>, <see cref="Changes"/>, <see cref="Snapshot"/> or <see cref="Archive"/> is set,
/// as told by <see cref="Kind"/>. The import id is also the MassTransit message id.
/// </summary>
public sealed record CohortExportReceived
{
    public required Guid ImportId { get; init; }
    public required string WorkspaceId { get; init; }
    public required string Partner { get; init; }
    public required string CohortId { get; init; }
    public required CohortExportKind Kind { get; init; }

    /// <summary>For <see cref="CohortExportKind.Name"/>: the cohort's display name.</summary>
    public string? Name { get; init; }

    /// <summary>For <see cref="CohortExportKind.Name"/>: the partner's created_at for the cohort.</summary>
    public DateTimeOffset? CreatedAt { get; init; }

    /// <summary>For <see cref="CohortExportKind.Changes"/>: change sets, applied in this order.</summary>
    public IReadOnlyList<CohortChange>? Changes { get; init; }

    /// <summary>For <see cref="CohortExportKind.SnapshotChunk"/>: one ordered chunk of a full membership snapshot.</summary>
    public SnapshotChunk? Snapshot { get; init; }

    /// <summary>For <see cref="CohortExportKind.Archive"/>: true. The cohort leaves every segment and cohort list.</summary>
    public bool Archive { get; init; }

    public required DateTimeOffset OccurredAt { get; init; }

    /// <summary>
    /// The cohort's request order, assigned by the gateway just before publishing (1, 2, 3, ... per workspace, partner
    /// and cohort). A request sent after another one's 202 always has a higher sequence; CohortService applies a cohort's
    /// imports in this order whatever order the broker delivers them in. Null on messages that change no cohort
    /// (credential checks, snapshot chunks before the last) and on messages from before sequences existed.
    /// </summary>
    public long? Sequence { get; init; }

    /// <summary>
    /// Whether applying this message may change the cohort (and so takes a place in the cohort's <see cref="Sequence"/>):
    /// names, archives, non-empty change lists and the last chunk of a snapshot that was not aborted.
    /// </summary>
    public bool ChangesCohort => Kind switch
    {
        CohortExportKind.Name or CohortExportKind.Archive => true,
        CohortExportKind.Changes => Changes is { Count: > 0 },
        CohortExportKind.SnapshotChunk => Snapshot is { IsLast: true, Aborted: false },
        _ => false,
    };
}

public enum CohortExportKind
{
    Name = 1,
    Changes = 2,
    SnapshotChunk = 3,
    Archive = 4,
}
