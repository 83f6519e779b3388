using CohortBridge.ServiceDefaults;

namespace CohortBridge.ImportGateway.Auth;

/// <summary>What KeyService says about a pair of credentials (contract: POST /internal/import-keys/validate).</summary>
public sealed record KeyValidationAnswer(string Result, string? WorkspaceId, Guid? KeyId);

/// <summary>Typed client of KeyService's internal key API; the resilience pipeline (retry, timeouts, circuit breaker) wraps it.</summary>
public sealed class KeyServiceClient(HttpClient http)
{
    public async Task<KeyValidationAnswer> ValidateAsync(string partner, string partnerApiKey, string clientSecret, CancellationToken ct)
    {
        using var response = await http.PostAsJsonAsync(
            "internal/import-keys/validate",
            new ValidateRequest(partner, partnerApiKey, clientSecret),
            PlatformJson.Options,
            ct);

        // Never include the body in an exception: the request carried secrets, and only the status matters here.
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"KeyService answered {(int)response.StatusCode} to a validation.", null, response.StatusCode);
        }

        return await response.Content.ReadFromJsonAsync<KeyValidationAnswer>(PlatformJson.Options, ct)
               ?? throw new HttpRequestException("KeyService sent an empty validation answer.");
    }

    public async Task ReportUsageAsync(IReadOnlyDictionary<Guid, DateTimeOffset> uses, CancellationToken ct)
    {
        var body = new UsageReport([.. uses.Select(u => new UsageItem(u.Key, u.Value))]);
        using var response = await http.PostAsJsonAsync("internal/import-keys/usage", body, PlatformJson.Options, ct);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"KeyService answered {(int)response.StatusCode} to a usage report.", null, response.StatusCode);
        }
    }

    private sealed record ValidateRequest(string Partner, string PartnerApiKey, string ClientSecret);

    private sealed record UsageReport(IReadOnlyList<UsageItem> Items);

    private sealed record UsageItem(Guid KeyId, DateTimeOffset UsedAt);
}
