using CohortBridge.Contracts;
using CohortBridge.ImportGateway.Data;
using MassTransit;
using Npgsql;
using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;

namespace CohortBridge.ImportGateway.Imports;

/// <summary>The bus did not confirm the message in time (or refused it): the request answers 503.</summary>
public sealed class BusUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Publishes one <see cref="CohortExportReceived"/> with the import id as message id and returns once the broker has
/// confirmed it (the bus is configured with publisher confirms). A short Polly pipeline (total timeout, retries with
/// an attempt timeout) bounds the wait (the bus is the singleton IPublishEndpoint); a retry republishes the same message id, which CohortService applies once.
/// A message that may change its cohort first takes the cohort's next <see cref="CohortExportReceived.Sequence"/>
/// (<see cref="CohortSequenceRepository"/>), so CohortService applies the cohort's requests in the order they came.
/// </summary>
public sealed partial class ImportPublisher
{
    private readonly IPublishEndpoint _publish;
    private readonly CohortSequenceRepository _sequences;
    private readonly ResiliencePipeline _pipeline;
    private readonly ILogger<ImportPublisher> _logger;

    public ImportPublisher(
        IBus publish, CohortSequenceRepository sequences, IOptions<GatewayOptions> options, ILogger<ImportPublisher> logger)
    {
        _publish = publish;
        _sequences = sequences;
        _logger = logger;
        var o = options.Value;
        var builder = new ResiliencePipelineBuilder().AddTimeout(o.PublishTimeout);
        if (o.PublishRetries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = o.PublishRetries,
                ShouldHandle = new PredicateBuilder().Handle<Exception>(ex => ex is not OperationCanceledException),
                Delay = TimeSpan.FromMilliseconds(100),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
            });
        }

        _pipeline = builder.AddTimeout(o.PublishAttemptTimeout).Build();
    }

    /// <summary>
    /// Publishes with the import id as message id, or <paramref name="messageId"/> when one import spans several
    /// messages (snapshot chunks); retries reuse the same message id.
    /// </summary>
    public async Task PublishAsync(CohortExportReceived message, CancellationToken requestAborted, Guid? messageId = null)
    {
        var id = messageId ?? message.ImportId;
        try
        {
            if (message.ChangesCohort && message.Sequence is null)
            {
                message = message with
                {
                    Sequence = await _sequences.NextAsync(message.WorkspaceId, message.Partner, message.CohortId, requestAborted),
                };
            }

            await _pipeline.ExecuteAsync(
                async ct => await _publish.Publish(message, ctx => ctx.MessageId = id, ct),
                requestAborted);
        }
        catch (NpgsqlException ex)
        {
            // Without its place in the cohort's order the request is not published: the partner retries it.
            Log.PublishFailed(_logger, message.ImportId, message.WorkspaceId, ex.GetType().Name);
            throw new BusUnavailableException("the cohort's request order could not be recorded", ex);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !requestAborted.IsCancellationRequested)
        {
            Log.PublishFailed(_logger, message.ImportId, message.WorkspaceId, ex.GetType().Name);
            throw new BusUnavailableException("the message bus did not confirm the import", ex);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 20, Level = LogLevel.Warning,
            Message = "Publishing import {ImportId} of workspace {WorkspaceId} was not confirmed ({Error})")]
        public static partial void PublishFailed(ILogger logger, Guid importId, string workspaceId, string error);
    }
}
