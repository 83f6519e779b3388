namespace CohortBridge.ImportGateway.Auth;

/// <summary>Log messages of partner authentication. They never carry a credential, hash or key prefix.</summary>
internal static partial class AuthLog
{
    [LoggerMessage(EventId = 300, Level = LogLevel.Warning,
        Message = "KeyService could not validate credentials for partner {Partner}; answering from cache or 503")]
    public static partial void KeyServiceUnavailable(ILogger logger, string partner, Exception exception);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Evicted data import key {KeyId} of workspace {WorkspaceId}")]
    public static partial void KeyEvicted(ILogger logger, Guid keyId, string workspaceId);

    [LoggerMessage(EventId = 302, Level = LogLevel.Warning, Message = "Reporting the use of {Count} keys to KeyService failed; retrying later")]
    public static partial void UsageReportFailed(ILogger logger, int count, Exception exception);

    [LoggerMessage(EventId = 303, Level = LogLevel.Information,
        Message = "Key invalidation endpoint {Endpoint} is ready; cached validations cleared in case events were missed")]
    public static partial void InvalidationEndpointReady(ILogger logger, string endpoint);
}
