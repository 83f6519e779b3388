namespace CohortBridge.ImportGateway.Auth;

/// <summary>
/// Authenticates a partner request: <c>partner_api_key</c> names the partner, <c>client_secret</c> is the workspace's
/// data import key for that partner. Answers from a local cache filled by KeyService.
/// </summary>
public interface IPartnerAuthenticator
{
    Task<PartnerAuthResult> AuthenticateAsync(string partner, string? partnerApiKey, string? clientSecret, CancellationToken ct);
}

public enum PartnerAuthStatus
{
    Authenticated,

    /// <summary>401 <c>Invalid Partner API key</c>.</summary>
    InvalidPartnerApiKey,

    /// <summary>401 <c>Invalid client secret</c> (unknown or invalidated key).</summary>
    InvalidClientSecret,

    /// <summary>401 <c>Partner not enabled for client with client secret: &lt;first 4&gt;…</c>.</summary>
    PartnerNotEnabled,

    /// <summary>KeyService could not be asked and nothing is cached: 503 with Retry-After.</summary>
    Unavailable,
}

/// <summary>The outcome; <see cref="WorkspaceId"/> and <see cref="KeyId"/> are set when authenticated.</summary>
public sealed record PartnerAuthResult(PartnerAuthStatus Status, string? WorkspaceId = null, Guid? KeyId = null)
{
    public bool IsAuthenticated => Status == PartnerAuthStatus.Authenticated;
}
