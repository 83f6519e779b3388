namespace CohortBridge.Contracts;

/// <summary>Published by KeyService when a data import key is invalidated; every gateway replica evicts it.</summary>
public sealed record DataImportKeyInvalidated
{
    public required Guid KeyId { get; init; }
    public required string WorkspaceId { get; init; }
    public required string Partner { get; init; }

    /// <summary>The non-secret lookup prefix of the key.</summary>
    public required string Prefix { get; init; }

    public required DateTimeOffset OccurredAt { get; init; }
}
