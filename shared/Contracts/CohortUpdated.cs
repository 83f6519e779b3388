namespace CohortBridge.Contracts;

/// <summary>
/// Published by CohortService after a change to a cohort is committed. Public: campaign services subscribe to it.
/// <c>(WorkspaceId, Partner, CohortId, Version)</c> identifies it; consumers may see it more than once.
/// </summary>
public sealed record CohortUpdated
{
    public required string WorkspaceId { get; init; }
    public required string Partner { get; init; }
    public required string CohortId { get; init; }
    public required string CohortName { get; init; }

    /// <summary>Increases by exactly one per applied change set of this cohort.</summary>
    public required long Version { get; init; }

    public required long MemberCount { get; init; }
    public required long AddedCount { get; init; }
    public required long RemovedCount { get; init; }

    /// <summary>
    /// Users added, when the change is small enough to carry (see <see cref="MustReread"/>).
    /// </summary>
    public IReadOnlyList<CohortMemberRef>? Added { get; init; }

    /// <summary>Users removed, when the change is small enough to carry.</summary>
    public IReadOnlyList<CohortMemberRef>? Removed { get; init; }

    /// <summary>
    /// True when <see cref="Added"/> and <see cref="Removed"/> were left out, because the change is large or because
    /// the event is published again after CohortService's replay retention: the consumer must re-read the cohort (or
    /// its change log) from CohortService.
    /// </summary>
    public bool MustReread { get; init; }

    /// <summary>True when this version archived the cohort: it then counts as empty everywhere.</summary>
    public bool Archived { get; init; }

    public Guid? ImportId { get; init; }
    public required DateTimeOffset OccurredAt { get; init; }
}

/// <summary>A user as named in cohort events: the dense per-workspace ordinal and the external id when identified.</summary>
public sealed record CohortMemberRef
{
    public required int Ordinal { get; init; }
    public string? ExternalId { get; init; }
}
