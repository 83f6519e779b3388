using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using CohortBridge.ImportGateway.Data;
using CohortBridge.ImportGateway.Endpoints;
using CohortBridge.ImportGateway.Imports;
using CohortBridge.ServiceDefaults;
using Npgsql;

namespace CohortBridge.ImportGateway.Snapshots;

/// <summary>
/// The <c>Idempotency-Key</c> of one snapshot PUT. The body is hashed (SHA-256) as it is read, so the digest is known
/// only at its end: the key is claimed then, before the last chunk is published (<see cref="SnapshotImporter"/>).
/// The digest also covers the method, the cohort id and the format, because on this endpoint the cohort is in the path,
/// not the body: the same key and body for another cohort is another request (409), not a replay.
/// </summary>
public sealed partial class SnapshotIdempotencyKey : IDisposable
{
    public const string ReplayedHeader = "Idempotent-Replayed";

    private readonly IdempotencyRepository _repository;
    private readonly GatewayOptions _options;
    private readonly ILogger _logger;
    private readonly PartnerCaller _caller;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private byte[]? _digest;

    public SnapshotIdempotencyKey(
        IdempotencyRepository repository, GatewayOptions options, ILogger logger, PartnerCaller caller, string key, string cohortId, bool csv)
    {
        (_repository, _options, _logger, _caller, Key) = (repository, options, logger, caller, key);
        _hash.AppendData(Encoding.UTF8.GetBytes($"PUT\n{cohortId}\n{(csv ? SnapshotEndpoints.Csv : SnapshotEndpoints.NdJson)}\n"));
    }

    public string Key { get; }

    /// <summary>
    /// An Idempotency-Key is 1 to 255 visible ASCII characters (the POST endpoints use this rule too).
    /// </summary>
    public static bool IsValid(string key) =>
        key.Length is > 0 and <= 255 && key.All(c => c is >= '!' and <= '~');

    /// <summary>Adds body bytes the reader has consumed (each byte exactly once, in order).</summary>
    public void Append(ReadOnlySequence<byte> consumed)
    {
        foreach (var segment in consumed)
        {
            _hash.AppendData(segment.Span);
        }
    }

    /// <summary>
    /// Claims the key for <paramref name="importId"/> once the whole body was appended. When a concurrent duplicate holds
    /// it, waits (bounded like the POST path: the holder only has its last chunk to publish) for its outcome, so that a
    /// quick retry gets the first response rather than a conflict. Throws <see cref="NpgsqlException"/> or
    /// <see cref="TimeoutException"/> when the gateway database cannot be asked.
    /// </summary>
    public async Task<IdempotencyClaim> ClaimAsync(Guid importId, CancellationToken ct)
    {
        _digest ??= _hash.GetHashAndReset();
        var deadline = DateTime.UtcNow + _options.PublishTimeout + TimeSpan.FromSeconds(1);
        var delay = TimeSpan.FromMilliseconds(25);
        while (true)
        {
            var claim = await _repository.ClaimForImportAsync(
                _caller.WorkspaceId, _caller.Partner, Key, _digest, importId, _options.IdempotencyLease, ct);
            if (claim.Outcome != ClaimOutcome.InProgress || DateTime.UtcNow > deadline)
            {
                return claim;
            }

            await Task.Delay(delay, ct);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 250));
        }
    }

    /// <summary>Stores the 202 for replays. Best effort: the snapshot is on the bus whatever happens here.</summary>
    public Task CompleteAsync(ImportAccepted accepted) =>
        BestEffortAsync(accepted.ImportId, () => _repository.CompleteAsync(
            _caller.WorkspaceId, _caller.Partner, Key, StatusCodes.Status202Accepted,
            JsonSerializer.Serialize(accepted, PlatformJson.Options), CancellationToken.None));

    /// <summary>The last chunk was not confirmed: a retry may take the key over at once instead of waiting for the lease.</summary>
    public Task FailAsync(Guid importId) =>
        BestEffortAsync(importId, () => _repository.FailAsync(_caller.WorkspaceId, _caller.Partner, Key, importId, CancellationToken.None));

    public void Dispose() => _hash.Dispose();

    private async Task BestEffortAsync(Guid importId, Func<Task> action)
    {
        try
        {
            await action();
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or InvalidOperationException)
        {
            Log.BookkeepingFailed(_logger, importId, ex.GetType().Name);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 44, Level = LogLevel.Warning,
            Message = "Idempotency-Key bookkeeping of snapshot {ImportId} failed ({Error})")]
        public static partial void BookkeepingFailed(ILogger logger, Guid importId, string error);
    }
}
