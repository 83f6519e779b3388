using CohortBridge.KeyService.Data;

namespace CohortBridge.KeyService.Keys;

public enum ValidationResult
{
    Valid,
    InvalidPartnerApiKey,
    InvalidClientSecret,
    PartnerNotEnabled,
}

public sealed record KeyValidation(ValidationResult Result, string? WorkspaceId = null, Guid? KeyId = null);

/// <summary>
/// Checks a partner API key and a data import key for the partner named in the request path, in API.md's order:
/// the partner API key first, then the client secret, then whether that key was issued for this partner.
/// </summary>
public sealed class KeyValidator(KeyRepository repository, KeyUsageRecorder usage, TimeProvider time)
{
    public async Task<KeyValidation> ValidateAsync(string? partner, string? partnerApiKey, string? clientSecret, CancellationToken ct)
    {
        var apiKeyPrefix = KeySecrets.TryGetPrefix(SecretKind.PartnerApiKey, partnerApiKey);
        if (apiKeyPrefix is null || !Identifiers.IsPartner(partner))
        {
            return new KeyValidation(ValidationResult.InvalidPartnerApiKey);
        }

        var secretPrefix = KeySecrets.TryGetPrefix(SecretKind.DataImportKey, clientSecret);
        var (partnerRow, keyRow) = await repository.FindForValidationAsync(apiKeyPrefix, secretPrefix, ct);

        // Both hashes are always compared when a row exists, so timing says no more than "this prefix exists".
        if (partnerRow is null || !KeySecrets.Verify(partnerApiKey!, partnerRow.ApiKeyHash) || partnerRow.Partner != partner)
        {
            return new KeyValidation(ValidationResult.InvalidPartnerApiKey);
        }

        if (keyRow is null || !KeySecrets.Verify(clientSecret!, keyRow.SecretHash) || keyRow.InvalidatedAt is not null)
        {
            return new KeyValidation(ValidationResult.InvalidClientSecret);
        }

        if (keyRow.Partner != partner)
        {
            return new KeyValidation(ValidationResult.PartnerNotEnabled);
        }

        usage.Record(keyRow.KeyId, time.GetUtcNow().UtcDateTime);
        return new KeyValidation(ValidationResult.Valid, keyRow.WorkspaceId, keyRow.KeyId);
    }
}
