namespace CohortBridge.Contracts;

/// <summary>
/// One chunk of a streamed full-membership snapshot. Chunks of one snapshot share <see cref="CohortExportReceived.ImportId"/>,
/// are numbered from 0, and the last one carries <see cref="IsLast"/> and the total <see cref="ChunkCount"/>.
/// </summary>
public sealed record SnapshotChunk
{
    public required int Sequence { get; init; }
    public required bool IsLast { get; init; }

    /// <summary>Set on the last chunk only: how many chunks the snapshot has.</summary>
    public int? ChunkCount { get; init; }

    public IReadOnlyList<string> ExternalIds { get; init; } = [];
    public IReadOnlyList<string> DeviceIds { get; init; } = [];
    public IReadOnlyList<UserAlias> Aliases { get; init; } = [];
    public IReadOnlyList<string> InvalidIdentifiers { get; init; } = [];

    /// <summary>
    /// Set by the gateway when the partner's stream broke off: the snapshot must change nothing and be reported
    /// failed with <see cref="AbortReason"/>. Chunks already staged are discarded.
    /// </summary>
    public bool Aborted { get; init; }

    public string? AbortReason { get; init; }
}
