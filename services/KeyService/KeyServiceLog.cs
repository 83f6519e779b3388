namespace CohortBridge.KeyService;

/// <summary>Log messages of KeyService. None of them ever carries a secret, a key or a key prefix.</summary>
internal static partial class KeyServiceLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Registered partner {Partner}")]
    public static partial void PartnerRegistered(ILogger logger, string partner);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Created workspace {WorkspaceId}")]
    public static partial void WorkspaceCreated(ILogger logger, string workspaceId);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information,
        Message = "Issued data import key {KeyId} for workspace {WorkspaceId} and partner {Partner}")]
    public static partial void KeyIssued(ILogger logger, Guid keyId, string workspaceId, string partner);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information,
        Message = "Invalidated data import key {KeyId} of workspace {WorkspaceId} and partner {Partner}")]
    public static partial void KeyInvalidated(ILogger logger, Guid keyId, string workspaceId, string partner);

    [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "Publishing {Event} for key {KeyId} was not confirmed")]
    public static partial void PublishFailed(ILogger logger, string @event, Guid keyId, Exception exception);

    [LoggerMessage(EventId = 105, Level = LogLevel.Warning, Message = "Writing last use of {Count} keys failed; retrying at the next flush")]
    public static partial void UsageFlushFailed(ILogger logger, int count, Exception exception);

    [LoggerMessage(EventId = 106, Level = LogLevel.Debug, Message = "Key validation for partner {Partner}: {Result}")]
    public static partial void Validated(ILogger logger, string partner, string result);
}
