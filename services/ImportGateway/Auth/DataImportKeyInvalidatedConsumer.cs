using CohortBridge.Contracts;
using MassTransit;

namespace CohortBridge.ImportGateway.Auth;

/// <summary>Evicts an invalidated key from this replica's cache (each replica has its own temporary queue).</summary>
public sealed class DataImportKeyInvalidatedConsumer(DataImportKeyCache cache, ILogger<DataImportKeyInvalidatedConsumer> logger)
    : IConsumer<DataImportKeyInvalidated>
{
    public Task Consume(ConsumeContext<DataImportKeyInvalidated> context)
    {
        cache.Invalidate(context.Message.KeyId);
        AuthLog.KeyEvicted(logger, context.Message.KeyId, context.Message.WorkspaceId);
        return Task.CompletedTask;
    }
}

/// <summary>The name of this replica's invalidation queue.</summary>
public sealed record KeyInvalidationEndpoint(string Name);

/// <summary>
/// The invalidation queue is temporary (auto-delete): events published while this replica was disconnected from the
/// broker are lost, so whenever the endpoint becomes ready (again) the cached validations are dropped.
/// </summary>
public sealed class KeyInvalidationEndpointObserver(
    KeyInvalidationEndpoint endpoint, DataImportKeyCache cache, ILogger<KeyInvalidationEndpointObserver> logger)
    : IReceiveEndpointObserver
{
    public Task Ready(ReceiveEndpointReady ready)
    {
        if (ready.InputAddress.AbsolutePath.EndsWith("/" + endpoint.Name, StringComparison.Ordinal))
        {
            cache.Clear();
            AuthLog.InvalidationEndpointReady(logger, endpoint.Name);
        }

        return Task.CompletedTask;
    }

    public Task Stopping(ReceiveEndpointStopping stopping) => Task.CompletedTask;

    public Task Completed(ReceiveEndpointCompleted completed) => Task.CompletedTask;

    public Task Faulted(ReceiveEndpointFaulted faulted) => Task.CompletedTask;
}
