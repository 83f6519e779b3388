namespace CohortBridge.Contracts;

/// <summary>
/// Published by CohortService (batched) when users are created, identified, changed or deleted, so that
/// SegmentService can answer membership checks by identifier. Entries carry the user's full current identity.
/// </summary>
public sealed record UserDirectoryChanged
{
    public required string WorkspaceId { get; init; }
    public required IReadOnlyList<DirectoryUser> Users { get; init; }

    /// <summary>
    /// The workspace's directory version when the identities were read (CohortService moves it on with every
    /// directory write): the entries are at least that recent. A consumer keeps each user's highest version and skips
    /// entries below it, so an older event delivered late (a replay from an error queue) cannot bring back an identity
    /// that has since changed or a user since deleted. 0 means unknown (a publisher from before versions). A deleted
    /// user never comes back in CohortService (an identifier used again gets a new ordinal).
    /// </summary>
    public long DirectoryVersion { get; init; }

    public required DateTimeOffset OccurredAt { get; init; }
}

public sealed record DirectoryUser
{
    public required int Ordinal { get; init; }
    public string? ExternalId { get; init; }
    public IReadOnlyList<UserAlias> Aliases { get; init; } = [];
    public IReadOnlyList<string> DeviceIds { get; init; } = [];

    /// <summary>True once the user has an external_id (then its device_ids no longer match it).</summary>
    public bool Identified { get; init; }

    public bool Deleted { get; init; }
}
