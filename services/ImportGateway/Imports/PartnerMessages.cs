using System.Globalization;

namespace CohortBridge.ImportGateway.Imports;

/// <summary>The partner-facing texts of shared/API.md, word for word: connectors match on them.</summary>
public static class PartnerMessages
{
    public const string Success = "success";
    public const string InvalidPartnerApiKey = "Invalid Partner API key";
    public const string InvalidClientSecret = "Invalid client secret";
    public const string CohortIdInvalid = "cohort_id must be a valid string";

    public const string CohortChangesInvalid =
        "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object";

    public const string NameInvalid = "name must be a non-empty string";
    public const string CreatedAtInvalid = "created_at must be a valid time as an ISO-8601 string";
    public const string BodyNotObject = "request body must be a JSON object";
    public const string ContentTypeJson = "content type must be application/json";
    public const string RateLimited = "rate limit exceeded";
    public const string Unavailable = "service temporarily unavailable";

    // Extensions (not in the compatible API; texts of our own).
    public const string IdempotencyConflict = "Idempotency-Key was already used with a different request body";
    public const string IdempotencyInProgress = "a request with this Idempotency-Key is still being processed; retry later";
    public const string IdempotencyKeyInvalid = "Idempotency-Key must be 1 to 255 visible ASCII characters";
    public const string ImportNotFound = "import not found";
    public const string ContentTypeSnapshot = "content type must be application/x-ndjson or text/csv";

    /// <summary><c>Partner not enabled for client with client secret: abcd…</c> (first 4 characters, then U+2026).</summary>
    public static string PartnerNotEnabled(string? clientSecret)
    {
        var secret = clientSecret ?? "";
        return "Partner not enabled for client with client secret: " + secret[..Math.Min(4, secret.Length)] + "\u2026";
    }

    /// <summary><c>Only 1,000 user_ids, device_ids, and aliases are allowed per request</c>, with the configured number.</summary>
    public static string TooManyIdentifiers(int limit) =>
        $"Only {limit.ToString("N0", CultureInfo.InvariantCulture)} user_ids, device_ids, and aliases are allowed per request";

    public static string BodyTooLarge(long limit) =>
        $"request body is larger than {limit.ToString("N0", CultureInfo.InvariantCulture)} bytes";
}
