using System.Buffers;
using System.IO.Pipelines;
using CohortBridge.Contracts;
using CohortBridge.ImportGateway.Data;
using CohortBridge.ImportGateway.Endpoints;
using CohortBridge.ImportGateway.Imports;
using CohortBridge.ServiceDefaults;
using MassTransit;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.ImportGateway.Snapshots;

/// <summary>
/// <c>PUT /partners/{partner}/cohorts/{cohort_id}/members</c> after authentication: reads the body line by line from the
/// request's <see cref="PipeReader"/> (memory is bounded by the chunks in flight, never the body), cuts it into chunks
/// of <see cref="SnapshotOptions.SnapshotChunkSize"/> identifiers, publishes them in order (<see cref="SnapshotChunkPublisher"/>)
/// and answers 202 once the last chunk (IsLast, ChunkCount) is confirmed. When the stream breaks off after chunks
/// went out (client gone, body over the limit, bus down), it publishes an <c>Aborted</c> chunk so that CohortService
/// discards what it staged, and does not answer 202.
/// With an <c>Idempotency-Key</c> the key is claimed for this import after the body is read and before the last chunk
/// (<see cref="SnapshotIdempotencyKey"/>); a request that does not win the key withdraws its chunks with an
/// <c>Aborted</c> chunk and answers the first response (replay) or 409, so a snapshot is applied once.
/// </summary>
public sealed partial class SnapshotImporter(
    ImportPublisher publisher,
    ImportRegisterRepository register,
    IdempotencyRepository idempotency,
    GatewayMetrics metrics,
    IOptions<SnapshotOptions> options,
    IOptions<GatewayOptions> gatewayOptions,
    ILogger<SnapshotImporter> logger)
{
    public const string KindName = "snapshot";
    public const string BodyEndedEarly = "the request body ended before the snapshot was complete";

    private readonly SnapshotOptions _options = options.Value;
    private readonly ImportPublisher _publisher = publisher;
    private readonly ImportRegisterRepository _register = register;
    private readonly ILogger<SnapshotImporter> _logger = logger;

    /// <summary>The import; <c>idempotencyKey</c> is a valid <c>Idempotency-Key</c> (checked by the endpoint) or null.</summary>
    public async Task<IResult> ImportAsync(
        HttpContext http, PartnerCaller caller, string cohortId, bool csv, PartnerRequestHandler handler, string? idempotencyKey)
    {
        var limit = _options.MaxSnapshotBytes;
        if (http.Request.ContentLength > limit)
        {
            return handler.Reject(StatusCodes.Status413PayloadTooLarge, PartnerMessages.BodyTooLarge(limit));
        }

        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
        {
            // Not the 1 MiB of the POST endpoints nor Kestrel's default: only this configured limit.
            size.MaxRequestBodySize = limit;
        }

        var session = new Session(this, caller, cohortId, NewId.NextGuid());
        using var key = idempotencyKey is null ? null
            : new SnapshotIdempotencyKey(idempotency, gatewayOptions.Value, _logger, caller, idempotencyKey, cohortId, csv);
        var ct = http.RequestAborted;
        try
        {
            var error = await ReadAsync(http.Request.BodyReader, csv, session, key, ct);
            if (error is not null)
            {
                // Only the first line can be malformed this way, before anything was published.
                return handler.Reject(StatusCodes.Status400BadRequest, error);
            }

            if (key is null)
            {
                await session.CompleteAsync(ct);
            }
            else if (await CompleteWithKeyAsync(http, session, key, handler, ct) is { } answer)
            {
                return answer;
            }
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await session.AbortAsync("the snapshot body exceeded the size limit");
            return handler.Reject(StatusCodes.Status413PayloadTooLarge, PartnerMessages.BodyTooLarge(limit));
        }
        catch (BadHttpRequestException)
        {
            await session.AbortAsync(BodyEndedEarly);
            return handler.Reject(StatusCodes.Status400BadRequest, BodyEndedEarly);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            await session.AbortAsync("the client disconnected before the end of the snapshot");
            return Results.Empty;
        }
        catch (BusUnavailableException)
        {
            await session.AbortAsync("the message bus did not confirm a chunk");
            return handler.Unavailable(http);
        }

        metrics.Accepted(CohortExportKind.SnapshotChunk);
        Log.Accepted(_logger, session.ImportId, caller.WorkspaceId, caller.Partner, session.Chunks, session.Identifiers, session.Invalid);
        return TypedResults.Json(new ImportAccepted(PartnerMessages.Success, session.ImportId), PlatformJson.Options,
            statusCode: StatusCodes.Status202Accepted);
    }

    /// <summary>
    /// Claims the Idempotency-Key for this session's import and, when it is ours, publishes the last chunk and stores the
    /// response. Returns null then (the caller answers 202); otherwise this request's chunks are withdrawn and the
    /// returned answer is the first request's response (replay) or 409/503.
    /// </summary>
    private async Task<IResult?> CompleteWithKeyAsync(
        HttpContext http, Session session, SnapshotIdempotencyKey key, PartnerRequestHandler handler, CancellationToken ct)
    {
        // Earlier chunks confirmed before the claim: the claim is then held only for one publish (the last chunk), as
        // on the POST path, which is what a concurrent duplicate's bounded wait allows for.
        await session.ConfirmPublishedAsync();
        IdempotencyClaim claim;
        try
        {
            claim = await key.ClaimAsync(session.ImportId, ct);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            Log.DatabaseUnavailable(_logger, session.ImportId, ex.GetType().Name);
            await session.AbortAsync("the gateway database could not record the Idempotency-Key");
            return handler.Unavailable(http);
        }

        switch (claim.Outcome)
        {
            case ClaimOutcome.Completed:
                // A retry of a snapshot already accepted: the first import applies it, this one's staged chunks go.
                Log.Replayed(_logger, session.ImportId, claim.ImportId);
                await session.WithdrawAsync($"a repeat of import {claim.ImportId} (same Idempotency-Key and body), which applies this snapshot");
                http.Response.Headers[SnapshotIdempotencyKey.ReplayedHeader] = "true";
                return Results.Content(claim.ResponseBody, "application/json", System.Text.Encoding.UTF8,
                    claim.ResponseStatus ?? StatusCodes.Status202Accepted);
            case ClaimOutcome.BodyMismatch:
                await session.AbortAsync("the Idempotency-Key was already used with a different request");
                return handler.Reject(StatusCodes.Status409Conflict, PartnerMessages.IdempotencyConflict);
            case ClaimOutcome.InProgress:
                await session.AbortAsync("a request with the same Idempotency-Key was still being processed");
                http.Response.Headers.RetryAfter = "1";
                return handler.Reject(StatusCodes.Status409Conflict, PartnerMessages.IdempotencyInProgress);
        }

        try
        {
            await session.CompleteAsync(ct);
        }
        catch (Exception)
        {
            // Not confirmed (bus down, client gone): the caller aborts the import; free the key for a retry at once.
            await key.FailAsync(session.ImportId);
            throw;
        }

        await key.CompleteAsync(new ImportAccepted(PartnerMessages.Success, session.ImportId));
        return null;
    }

    /// <summary>Reads every line into the session; returns the 400 message when the body is not NDJSON/CSV at all.</summary>
    private async Task<string?> ReadAsync(PipeReader body, bool csv, Session session, SnapshotIdempotencyKey? key, CancellationToken ct)
    {
        var lines = new LineSplitter(_options.MaxSnapshotLineBytes, csv);
        while (true)
        {
            var result = await body.ReadAsync(ct);
            var buffer = result.Buffer;
            var outcome = lines.Consume(ref buffer, result.IsCompleted, session.Chunk, _options.SnapshotChunkSize);
            // Consume leaves the unread rest in buffer: what it consumed is hashed here, so every byte exactly once.
            key?.Append(result.Buffer.Slice(result.Buffer.Start, buffer.Start));
            if (outcome == LineOutcome.ChunkFull)
            {
                // Stopped early: unconsumed complete lines stay examined-not, so the next read returns at once.
                body.AdvanceTo(buffer.Start);
                await session.PublishFullChunkAsync(ct);
                continue;
            }

            body.AdvanceTo(buffer.Start, buffer.End);
            if (outcome == LineOutcome.Malformed)
            {
                return lines.Error;
            }

            if (result.IsCompleted)
            {
                return lines.ErrorAtEnd;
            }
        }
    }

    private enum LineOutcome
    {
        NeedMore,
        ChunkFull,
        Malformed,
    }

    /// <summary>Splits the buffered bytes into lines (LF or CRLF) and hands them to the line format.</summary>
    private sealed class LineSplitter(int maxLineBytes, bool csv)
    {
        private SnapshotLineFormat? _format;
        private bool _first = true;
        private bool _skipping;

        public string? Error { get; private set; }

        /// <summary>
        /// A CSV body must at least have its header row (API.md): without one (an empty export file) it is a 400, not
        /// a snapshot that empties the cohort. An empty NDJSON body is a snapshot with no members.
        /// </summary>
        public string? ErrorAtEnd => csv && _format is null ? SnapshotLineFormat.CsvHeaderInvalid : null;

        public LineOutcome Consume(ref ReadOnlySequence<byte> buffer, bool completed, SnapshotChunkBuilder chunk, int chunkSize)
        {
            var reader = new SequenceReader<byte>(buffer);
            try
            {
                while (chunk.Count < chunkSize)
                {
                    if (!reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
                    {
                        var rest = reader.UnreadSequence;
                        if (completed && rest.Length > 0)
                        {
                            reader.AdvanceToEnd();
                            if (!_skipping && !Line(rest, chunk))
                            {
                                return LineOutcome.Malformed;
                            }
                        }
                        else if (rest.Length > maxLineBytes)
                        {
                            // A line longer than allowed: one invalid identifier, the rest of it is dropped unread.
                            if (!_skipping && !Line(rest.Slice(0, 256), chunk, tooLong: true))
                            {
                                return LineOutcome.Malformed;
                            }

                            _skipping = true;
                            reader.AdvanceToEnd();
                        }

                        return LineOutcome.NeedMore;
                    }

                    if (_skipping)
                    {
                        _skipping = false;
                        continue;
                    }

                    if (!Line(line, chunk))
                    {
                        return LineOutcome.Malformed;
                    }
                }

                return LineOutcome.ChunkFull;
            }
            finally
            {
                buffer = buffer.Slice(reader.Position);
            }
        }

        private bool Line(ReadOnlySequence<byte> sequence, SnapshotChunkBuilder chunk, bool tooLong = false)
        {
            if (sequence.IsSingleSegment)
            {
                return Line(sequence.FirstSpan, chunk, tooLong);
            }

            var copy = ArrayPool<byte>.Shared.Rent((int)sequence.Length);
            try
            {
                sequence.CopyTo(copy);
                return Line(copy.AsSpan(0, (int)sequence.Length), chunk, tooLong);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(copy);
            }
        }

        private bool Line(ReadOnlySpan<byte> line, SnapshotChunkBuilder chunk, bool tooLong)
        {
            if (_first && line.StartsWith("\uFEFF"u8))
            {
                line = line[3..];
            }

            if (line.Length > 0 && line[^1] == (byte)'\r')
            {
                line = line[..^1];
            }

            if (line.Trim(" \t"u8).IsEmpty)
            {
                return true;
            }

            if (_format is null)
            {
                _first = false;
                var (format, firstLineIsData, error) = tooLong ? (null, false, csv ? SnapshotLineFormat.CsvHeaderInvalid : SnapshotLineFormat.NotNdJson)
                    : SnapshotLineFormat.Create(csv, line);
                if (format is null)
                {
                    Error = error;
                    return false;
                }

                _format = format;
                if (!firstLineIsData)
                {
                    return true;
                }
            }

            if (tooLong)
            {
                chunk.AddInvalid(line);
            }
            else
            {
                _format.Read(line, chunk);
            }

            return true;
        }
    }

    /// <summary>One snapshot being streamed: its chunk under construction, the publisher, and the abort path.</summary>
    private sealed class Session(SnapshotImporter owner, PartnerCaller caller, string cohortId, Guid importId)
    {
        private readonly SnapshotChunkPublisher _publisher = new(owner._publisher, owner._options.SnapshotPublishesInFlight);
        private readonly DateTimeOffset _startedAt = DateTimeOffset.UtcNow;
        private bool _registered;

        public Guid ImportId { get; } = importId;
        public SnapshotChunkBuilder Chunk { get; } = new(owner._options.InvalidSampleLength);
        public int Chunks => _publisher.Published;
        public long Identifiers => Chunk.Total;
        public long Invalid => Chunk.InvalidTotal;

        public async Task PublishFullChunkAsync(CancellationToken ct)
        {
            await RegisterOnceAsync();
            await _publisher.PublishAsync(Message(Chunk.Take(_publisher.Published, isLast: false, chunkCount: null)), ct);
        }

        /// <summary>Waits until every chunk published so far is confirmed; throws the failure of one that was not.</summary>
        public Task ConfirmPublishedAsync() => _publisher.ConfirmAllAsync();

        public async Task CompleteAsync(CancellationToken ct)
        {
            await RegisterOnceAsync();
            var sequence = _publisher.Published;
            await _publisher.PublishLastAsync(Message(Chunk.Take(sequence, isLast: true, chunkCount: sequence + 1)), ct);
        }

        /// <summary>Best effort: tells CohortService to discard what it staged. Nothing to do when nothing went out.</summary>
        public Task AbortAsync(string reason)
        {
            Log.Aborted(owner._logger, ImportId, caller.WorkspaceId, caller.Partner, reason);
            return WithdrawAsync(reason);
        }

        /// <summary><see cref="AbortAsync"/> without the warning (the request itself did not fail).</summary>
        public async Task WithdrawAsync(string reason)
        {
            if (_publisher.Published == 0)
            {
                return;
            }

            await _publisher.SettleAsync();
            try
            {
                await owner._publisher.PublishAsync(Message(new SnapshotChunk
                {
                    Sequence = _publisher.Published,
                    IsLast = false,
                    Aborted = true,
                    AbortReason = reason,
                }), CancellationToken.None, NewId.NextGuid());
            }
            catch (BusUnavailableException)
            {
                // CohortService's timeout fails the import and removes its staging rows instead.
                Log.AbortNotPublished(owner._logger, ImportId);
            }
        }

        private CohortExportReceived Message(SnapshotChunk chunk) => new()
        {
            ImportId = ImportId,
            WorkspaceId = caller.WorkspaceId,
            Partner = caller.Partner,
            CohortId = cohortId,
            Kind = CohortExportKind.SnapshotChunk,
            Snapshot = chunk,
            OccurredAt = _startedAt,
        };

        /// <summary>The import register (status, tenant boundary) learns the import before its first chunk leaves.</summary>
        private async Task RegisterOnceAsync()
        {
            if (_registered)
            {
                return;
            }

            _registered = true;
            try
            {
                await owner._register.RecordAsync(ImportId, caller.WorkspaceId, caller.Partner, cohortId, KindName, _startedAt, CancellationToken.None);
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException or InvalidOperationException)
            {
                // Status still works once CohortService has the import; the register only answers "accepted" earlier.
                Log.RegisterFailed(owner._logger, ImportId, ex.GetType().Name);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 40, Level = LogLevel.Information,
            Message = "Accepted snapshot {ImportId} of workspace {WorkspaceId}, partner {Partner}: {Chunks} chunks, {Identifiers} identifiers ({Invalid} invalid)")]
        public static partial void Accepted(ILogger logger, Guid importId, string workspaceId, string partner, int chunks, long identifiers, long invalid);

        [LoggerMessage(EventId = 41, Level = LogLevel.Warning,
            Message = "Snapshot {ImportId} of workspace {WorkspaceId}, partner {Partner} broke off: {Reason}")]
        public static partial void Aborted(ILogger logger, Guid importId, string workspaceId, string partner, string reason);

        [LoggerMessage(EventId = 42, Level = LogLevel.Warning,
            Message = "The abort marker of snapshot {ImportId} was not confirmed; CohortService's timeout will fail it")]
        public static partial void AbortNotPublished(ILogger logger, Guid importId);

        [LoggerMessage(EventId = 43, Level = LogLevel.Warning, Message = "Could not register snapshot {ImportId} ({Error})")]
        public static partial void RegisterFailed(ILogger logger, Guid importId, string error);

        [LoggerMessage(EventId = 45, Level = LogLevel.Information,
            Message = "Snapshot {ImportId} repeats {FirstImportId} under the same Idempotency-Key: its chunks are withdrawn, the first response is replayed")]
        public static partial void Replayed(ILogger logger, Guid importId, Guid firstImportId);

        [LoggerMessage(EventId = 46, Level = LogLevel.Warning,
            Message = "Gateway database unavailable while claiming the Idempotency-Key of snapshot {ImportId} ({Error})")]
        public static partial void DatabaseUnavailable(ILogger logger, Guid importId, string error);
    }
}
