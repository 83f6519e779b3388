namespace CohortBridge.Contracts;

/// <summary>
/// Published by CohortService (batched) when users are created, identified, changed or deleted, so that
/// SegmentService can answer membership checks by identifier. Entries carry the user's full current identity.
/// </summary>
public sealed record UserDirectoryChanged
{
    public required string WorkspaceId { get; init; }
    public required IReadOnlyList<DirectoryUser> Users { get; init; }
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
