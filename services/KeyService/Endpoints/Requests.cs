namespace CohortBridge.KeyService.Endpoints;

public sealed record RegisterPartnerRequest(string? Partner, string? DisplayName);

public sealed record RegisterPartnerResponse(string Partner, string DisplayName, string PartnerApiKey, DateTime CreatedAt);

public sealed record CreateWorkspaceRequest(string? WorkspaceId, string? Name);

public sealed record WorkspaceResponse(string WorkspaceId, string Name, DateTime CreatedAt);

public sealed record IssueKeyResponse(Guid KeyId, string ClientSecret, DateTime CreatedAt, string RestEndpoint, string Prefix);

public sealed record ImportKeyResponse(Guid KeyId, string Prefix, DateTime CreatedAt, DateTime? LastUsedAt, DateTime? InvalidatedAt);

public sealed record Page<T>(IReadOnlyList<T> Items, string? NextCursor);

public sealed record ValidateKeyRequest(string? Partner, string? PartnerApiKey, string? ClientSecret);

/// <summary><c>result</c>: valid | invalid_partner_api_key | invalid_client_secret | partner_not_enabled.</summary>
public sealed record ValidateKeyResponse(string Result, string? WorkspaceId = null, Guid? KeyId = null);

public sealed record KeyUsageReport(IReadOnlyList<KeyUsageItem>? Items);

public sealed record KeyUsageItem(Guid KeyId, DateTimeOffset UsedAt);
