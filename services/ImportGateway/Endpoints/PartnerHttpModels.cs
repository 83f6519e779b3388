using System.Text.Json.Serialization;

namespace CohortBridge.ImportGateway.Endpoints;

/// <summary>The partner-compatible error shape: <c>{"message": ...}</c>, plus <c>errors</c> when several problems exist.</summary>
public sealed record PartnerMessage(
    string Message,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<string>? Errors = null);

/// <summary>202 <c>{"message": "success", "import_id": "..."}</c>.</summary>
public sealed record ImportAccepted(string Message, Guid ImportId);

/// <summary>Body of <c>POST /partners/{partner}/cohorts</c> (documentation only: the handler reads the body with Utf8JsonReader).</summary>
public sealed record CohortNameRequest(string PartnerApiKey, string ClientSecret, string CohortId, string Name, DateTimeOffset CreatedAt);

/// <summary>Body of <c>POST /partners/{partner}/cohorts/users</c> (documentation only).</summary>
public sealed record CohortChangesRequest(string PartnerApiKey, string ClientSecret, string CohortId, IReadOnlyList<CohortChangeRequest> CohortChanges);

/// <summary>One entry of <c>cohort_changes</c> (documentation only).</summary>
public sealed record CohortChangeRequest(
    IReadOnlyList<string>? UserIds, IReadOnlyList<string>? DeviceIds, IReadOnlyList<AliasRequest>? Aliases, bool ShouldRemove = false);

public sealed record AliasRequest(string AliasName, string AliasLabel);

/// <summary><c>GET /partners/{partner}/imports/{import_id}</c>.</summary>
public sealed record ImportStatusResponse
{
    public required Guid ImportId { get; init; }
    public required string CohortId { get; init; }
    public required string Status { get; init; }
    public long Received { get; init; }
    public long Matched { get; init; }
    public long Added { get; init; }
    public long Removed { get; init; }
    public IReadOnlyDictionary<string, long> Unmatched { get; init; } = new Dictionary<string, long>();
    public IReadOnlyList<string> UnmatchedSample { get; init; } = [];
    public long? CohortVersion { get; init; }
    [JsonConverter(typeof(UtcTimeConverter))]
    public DateTimeOffset? AcceptedAt { get; init; }
    [JsonConverter(typeof(UtcTimeConverter))]
    public DateTimeOffset? CompletedAt { get; init; }
    public string? Error { get; init; }

    /// <summary>Snapshots only: identifiers processed so far.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? Processed { get; init; }
}

/// <summary>Times go out in UTC with a <c>Z</c> (shared/API.md conventions).</summary>
public sealed class UtcTimeConverter : JsonConverter<DateTimeOffset>
{
    public override DateTimeOffset Read(ref System.Text.Json.Utf8JsonReader reader, Type typeToConvert, System.Text.Json.JsonSerializerOptions options) =>
        reader.GetDateTimeOffset();

    public override void Write(System.Text.Json.Utf8JsonWriter writer, DateTimeOffset value, System.Text.Json.JsonSerializerOptions options) =>
        writer.WriteStringValue(value.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.FFFFFFF'Z'", System.Globalization.CultureInfo.InvariantCulture));
}
