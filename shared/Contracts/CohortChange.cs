namespace CohortBridge.Contracts;

/// <summary>One entry of a partner's <c>cohort_changes</c> array.</summary>
public sealed record CohortChange
{
    public IReadOnlyList<string> ExternalIds { get; init; } = [];
    public IReadOnlyList<string> DeviceIds { get; init; } = [];
    public IReadOnlyList<UserAlias> Aliases { get; init; } = [];

    /// <summary>
    /// Identifiers the gateway could not read as strings (a number, an object, an alias without a name...),
    /// as short raw JSON text. They are counted as <c>invalid_identifier</c>; they never fail the request.
    /// </summary>
    public IReadOnlyList<string> InvalidIdentifiers { get; init; } = [];

    public bool ShouldRemove { get; init; }
}
