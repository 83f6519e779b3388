namespace CohortBridge.Contracts;

/// <summary>
/// Sent by an upstream user-tracking service to feed CohortService's user directory: the same upsert semantics as
/// the admin bulk endpoint, plus deletions by external_id.
/// </summary>
public sealed record UserProfilesChanged
{
    public required string WorkspaceId { get; init; }
    public IReadOnlyList<UserProfile> Upserts { get; init; } = [];
    public IReadOnlyList<string> DeletedExternalIds { get; init; } = [];
    public required DateTimeOffset OccurredAt { get; init; }
}

public sealed record UserProfile
{
    public string? ExternalId { get; init; }
    public IReadOnlyList<UserAlias> Aliases { get; init; } = [];
    public IReadOnlyList<string> DeviceIds { get; init; } = [];
}
