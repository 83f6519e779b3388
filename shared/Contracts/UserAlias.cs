namespace CohortBridge.Contracts;

public sealed record UserAlias
{
    public required string AliasName { get; init; }
    public required string AliasLabel { get; init; }
}
