using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.ImportGateway.Imports;

/// <summary>What a partner POST body said, read in one pass; <see cref="Errors"/> are the 400 texts in check order.</summary>
public sealed class PartnerRequest
{
    public string? PartnerApiKey { get; set; }
    public string? ClientSecret { get; set; }
    public string? CohortId { get; set; }
    public string? Name { get; set; }
    public DateTimeOffset? CreatedAt { get; set; }
    public List<CohortChange> Changes { get; } = [];
    public int IdentifierCount { get; set; }
    public List<string> Errors { get; } = [];
}

/// <summary>
/// Reads and validates the two partner POST bodies with one forward pass of <see cref="Utf8JsonReader"/> over the
/// buffered body (no model binding, no DOM). Only a body that is not a JSON object at all fails the parse
/// (<see cref="PartnerMessages.BodyNotObject"/>); every other problem becomes an entry of <see cref="PartnerRequest.Errors"/>
/// so that authentication can be decided before field validation. Unknown fields are ignored, as the partner API does.
/// </summary>
public static partial class PartnerRequestParser
{
    public const int MaxCohortIdLength = 255;
    public const int MaxIdentifierLength = 512;

    /// <summary>A cohort_id in a body or a path: non-empty, at most <see cref="MaxCohortIdLength"/>, storable.</summary>
    public static bool IsValidCohortId([NotNullWhen(true)] string? cohortId) =>
        cohortId is { Length: > 0 and <= MaxCohortIdLength } && PostgresText.CanStore(cohortId);

    /// <summary>An identifier or alias part: non-empty, at most <see cref="MaxIdentifierLength"/>, storable.</summary>
    public static bool IsValidIdentifier([NotNullWhen(true)] string? value) =>
        value is { Length: > 0 and <= MaxIdentifierLength } && PostgresText.CanStore(value);
    private const int MaxCredentialLength = 1024;
    private const int MaxInvalidRawLength = 64;

    private static readonly JsonReaderOptions ReaderOptions = new() { MaxDepth = 32 };

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}([.,]\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?)?$", RegexOptions.CultureInvariant)]
    private static partial Regex Iso8601();

    /// <summary>Parses a <c>POST /partners/{partner}/cohorts</c> body; null when it is not a JSON object.</summary>
    public static PartnerRequest? ParseCohortName(ReadOnlySpan<byte> body) => Parse(body, isChanges: false, 0);

    /// <summary>Parses a <c>POST /partners/{partner}/cohorts/users</c> body; null when it is not a JSON object.</summary>
    public static PartnerRequest? ParseCohortChanges(ReadOnlySpan<byte> body, int maxIdentifiers) =>
        Parse(body, isChanges: true, maxIdentifiers);

    private static PartnerRequest? Parse(ReadOnlySpan<byte> body, bool isChanges, int maxIdentifiers)
    {
        ReadOnlySpan<byte> bom = [0xEF, 0xBB, 0xBF];
        if (body.StartsWith(bom))
        {
            body = body[3..];
        }

        // JSON text is UTF-8 (RFC 8259); the reader checks that only for the strings it decodes, and skips the rest.
        if (!System.Text.Unicode.Utf8.IsValid(body))
        {
            return null;
        }

        try
        {
            var reader = new Utf8JsonReader(body, ReaderOptions);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }

            var request = new PartnerRequest();
            bool cohortIdOk = false, nameOk = false, createdAtOk = false, changesSeen = false, changesOk = true;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("partner_api_key"u8))
                {
                    reader.Read();
                    request.PartnerApiKey = ReadCredential(ref reader);
                }
                else if (reader.ValueTextEquals("client_secret"u8))
                {
                    reader.Read();
                    request.ClientSecret = ReadCredential(ref reader);
                }
                else if (reader.ValueTextEquals("cohort_id"u8))
                {
                    reader.Read();
                    request.CohortId = ReadString(ref reader);
                    cohortIdOk = IsValidCohortId(request.CohortId);
                }
                else if (!isChanges && reader.ValueTextEquals("name"u8))
                {
                    reader.Read();
                    request.Name = ReadString(ref reader);
                    nameOk = !string.IsNullOrEmpty(request.Name) && PostgresText.CanStore(request.Name);
                }
                else if (!isChanges && reader.ValueTextEquals("created_at"u8))
                {
                    reader.Read();
                    var text = ReadString(ref reader);
                    request.CreatedAt = ParseIso8601(text);
                    createdAtOk = request.CreatedAt is not null;
                }
                else if (isChanges && reader.ValueTextEquals("cohort_changes"u8))
                {
                    reader.Read();
                    changesSeen = true;
                    request.Changes.Clear();
                    request.IdentifierCount = 0;
                    changesOk = ReadChanges(ref reader, body, request, maxIdentifiers);
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }

            if (reader.TokenType != JsonTokenType.EndObject || reader.Read())
            {
                // Unreachable for well-formed input: the reader throws on anything after the top-level value.
                return null;
            }

            if (!cohortIdOk)
            {
                request.Errors.Add(PartnerMessages.CohortIdInvalid);
            }

            if (isChanges)
            {
                if (!changesSeen || !changesOk)
                {
                    request.Errors.Add(PartnerMessages.CohortChangesInvalid);
                }

                if (request.IdentifierCount > maxIdentifiers)
                {
                    request.Errors.Add(PartnerMessages.TooManyIdentifiers(maxIdentifiers));
                }
            }
            else
            {
                if (!nameOk)
                {
                    request.Errors.Add(PartnerMessages.NameInvalid);
                }

                if (!createdAtOk)
                {
                    request.Errors.Add(PartnerMessages.CreatedAtInvalid);
                }
            }

            return request;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or ArgumentException)
        {
            // Malformed JSON, invalid UTF-8, too deep, trailing garbage: the body is not a (usable) JSON object.
            return null;
        }
    }

    /// <summary>ISO-8601 date or date-time (offset optional, read as UTC when absent); null when it is not one.</summary>
    public static DateTimeOffset? ParseIso8601(string? text)
    {
        if (text is null || text.Length > 40 || !Iso8601().IsMatch(text))
        {
            return null;
        }

        return DateTimeOffset.TryParse(
            text.Replace(',', '.'), CultureInfo.InvariantCulture,
            DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var value)
            ? value
            : null;
    }

    private static string? ReadCredential(ref Utf8JsonReader reader)
    {
        if (reader.TokenType == JsonTokenType.String && reader.ValueSpan.Length <= MaxCredentialLength * 6)
        {
            var value = reader.GetText();
            return value is { Length: <= MaxCredentialLength } ? value : null;
        }

        reader.Skip();
        return null;
    }

    private static string? ReadString(ref Utf8JsonReader reader)
    {
        if (reader.TokenType == JsonTokenType.String)
        {
            return reader.GetText();
        }

        reader.Skip();
        return null;
    }

    /// <summary>Reads <c>cohort_changes</c>; false when its shape is wrong (the reader is then past the value).</summary>
    private static bool ReadChanges(ref Utf8JsonReader reader, ReadOnlySpan<byte> body, PartnerRequest request, int maxIdentifiers)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return false;
        }

        var ok = true;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                reader.Skip();
                ok = false;
                continue;
            }

            var change = ReadChange(ref reader, body, request, maxIdentifiers);
            if (change is null)
            {
                ok = false;
            }
            else if (ok)
            {
                request.Changes.Add(change);
            }
        }

        return ok;
    }

    private static CohortChange? ReadChange(ref Utf8JsonReader reader, ReadOnlySpan<byte> body, PartnerRequest request, int maxIdentifiers)
    {
        var externalIds = new List<string>();
        var deviceIds = new List<string>();
        var aliases = new List<UserAlias>();
        var invalid = new List<string>();
        // At least one of the three keys must hold an array; null is fine for the others (connectors send all three).
        bool anyArray = false, ok = true, shouldRemove = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("user_ids"u8) || reader.ValueTextEquals("device_ids"u8))
            {
                var target = reader.ValueTextEquals("user_ids"u8) ? externalIds : deviceIds;
                reader.Read();
                anyArray |= reader.TokenType == JsonTokenType.StartArray;
                ok &= ReadIdentifierArray(ref reader, body, request, maxIdentifiers, target, invalid);
            }
            else if (reader.ValueTextEquals("aliases"u8))
            {
                reader.Read();
                anyArray |= reader.TokenType == JsonTokenType.StartArray;
                ok &= ReadAliasArray(ref reader, body, request, maxIdentifiers, aliases, invalid);
            }
            else if (reader.ValueTextEquals("should_remove"u8))
            {
                reader.Read();
                switch (reader.TokenType)
                {
                    case JsonTokenType.True: shouldRemove = true; break;
                    case JsonTokenType.False or JsonTokenType.Null: shouldRemove = false; break;
                    default: reader.Skip(); ok = false; break;
                }
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        return ok && anyArray
            ? new CohortChange
            {
                ExternalIds = externalIds,
                DeviceIds = deviceIds,
                Aliases = aliases,
                InvalidIdentifiers = invalid,
                ShouldRemove = shouldRemove,
            }
            : null;
    }

    private static bool ReadIdentifierArray(
        ref Utf8JsonReader reader, ReadOnlySpan<byte> body, PartnerRequest request, int maxIdentifiers,
        List<string> target, List<string> invalid)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return true;
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return false;
        }

        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            // Past the limit the request is a 400 anyway: keep counting, stop keeping.
            var keep = ++request.IdentifierCount <= maxIdentifiers;
            if (reader.TokenType == JsonTokenType.String)
            {
                if (reader.ValueSpan.Length <= MaxIdentifierLength * 6 && reader.GetText() is var id && IsValidIdentifier(id))
                {
                    if (keep)
                    {
                        target.Add(id);
                    }

                    continue;
                }
            }

            var raw = RawText(ref reader, body);
            if (keep)
            {
                invalid.Add(raw);
            }
        }

        return true;
    }

    private static bool ReadAliasArray(
        ref Utf8JsonReader reader, ReadOnlySpan<byte> body, PartnerRequest request, int maxIdentifiers,
        List<UserAlias> target, List<string> invalid)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return true;
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return false;
        }

        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            var keep = ++request.IdentifierCount <= maxIdentifiers;
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                var raw = RawText(ref reader, body);
                if (keep)
                {
                    invalid.Add(raw);
                }

                continue;
            }

            var start = (int)reader.TokenStartIndex;
            string? name = null, label = null;
            var extraneous = false;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var isName = reader.ValueTextEquals("alias_name"u8);
                var isLabel = !isName && reader.ValueTextEquals("alias_label"u8);
                reader.Read();
                if ((isName || isLabel) && reader.TokenType == JsonTokenType.String && reader.ValueSpan.Length <= MaxIdentifierLength * 6)
                {
                    var value = reader.GetText();
                    if (isName)
                    {
                        name = value;
                    }
                    else
                    {
                        label = value;
                    }
                }
                else
                {
                    extraneous |= isName || isLabel;
                    reader.Skip();
                }
            }

            if (!extraneous && IsValidIdentifier(name) && IsValidIdentifier(label))
            {
                if (keep)
                {
                    target.Add(new UserAlias { AliasName = name, AliasLabel = label });
                }
            }
            else if (keep)
            {
                invalid.Add(Shorten(body.Slice(start, (int)reader.BytesConsumed - start)));
            }
        }

        return true;
    }

    /// <summary>The current value's raw JSON text, shortened; leaves the reader on the value's last token.</summary>
    private static string RawText(ref Utf8JsonReader reader, ReadOnlySpan<byte> body)
    {
        var start = (int)reader.TokenStartIndex;
        reader.Skip();
        return Shorten(body.Slice(start, (int)reader.BytesConsumed - start));
    }

    private static string Shorten(ReadOnlySpan<byte> raw)
    {
        var cut = raw.Length > MaxInvalidRawLength ? raw[..MaxInvalidRawLength] : raw;
        var text = Encoding.UTF8.GetString(cut);
        return raw.Length > MaxInvalidRawLength ? text + "\u2026" : text;
    }
}
