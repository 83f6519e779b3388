using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.CohortService.Directory;

/// <summary>
/// Reads the NDJSON body of a bulk upsert straight from the request pipe: lines are split on the bytes and parsed with
/// <see cref="Utf8JsonReader"/> (no string per line; only the identifier values are allocated). Anything the fast
/// parser does not recognise (unknown or repeated properties, nulls, other whitespace, invalid UTF-8...) is decoded
/// and handled by the general <see cref="JsonSerializer"/> path, so every line gets the same answer as before.
/// Line numbers count line breaks as <see cref="StreamReader.ReadLine()"/> does (\n, \r\n, \r); blank lines count.
/// </summary>
public static class NdjsonProfileReader
{
    public const string NotAProfile = "not a JSON profile object: {\"external_id\", \"aliases\", \"device_ids\"}";

    private static ReadOnlySpan<byte> Bom => [0xEF, 0xBB, 0xBF];

    public static async IAsyncEnumerable<ProfileLine> ReadAsync(
        PipeReader body, List<LineError> errors, [EnumeratorCancellation] CancellationToken ct)
    {
        var number = 0;
        var start = true;
        var parsed = new List<ProfileLine>(4096);
        while (true)
        {
            var read = await body.ReadAsync(ct);
            var buffer = read.Buffer;
            if (start)
            {
                if (buffer.Length < Bom.Length && !read.IsCompleted)
                {
                    body.AdvanceTo(buffer.Start, buffer.End);
                    continue;
                }

                start = false;
                if (buffer.Length >= Bom.Length && StartsWithBom(buffer))
                {
                    buffer = buffer.Slice(Bom.Length);
                }
            }

            var consumed = ParseLines(buffer, read.IsCompleted, ref number, parsed, errors);
            body.AdvanceTo(consumed, buffer.End);
            foreach (var line in parsed)
            {
                yield return line;
            }

            parsed.Clear();
            if (read.IsCompleted)
            {
                break;
            }
        }
    }

    private static bool StartsWithBom(ReadOnlySequence<byte> buffer)
    {
        Span<byte> head = stackalloc byte[3];
        buffer.Slice(0, 3).CopyTo(head);
        return head.SequenceEqual(Bom);
    }

    /// <summary>Parses every complete line of <paramref name="buffer"/>; returns where the unread rest starts.</summary>
    private static SequencePosition ParseLines(
        ReadOnlySequence<byte> buffer, bool final, ref int number, List<ProfileLine> parsed, List<LineError> errors)
    {
        var reader = new SequenceReader<byte>(buffer);
        while (!reader.End)
        {
            var lineStart = reader.Position;
            if (!reader.TryReadToAny(out ReadOnlySequence<byte> line, "\r\n"u8, advancePastDelimiter: false))
            {
                if (!final)
                {
                    return lineStart;
                }

                // The last line has no line break.
                line = reader.UnreadSequence;
                reader.AdvanceToEnd();
                Parse(line, ++number, parsed, errors);
                break;
            }

            reader.TryRead(out var delimiter);
            if (delimiter == (byte)'\r')
            {
                if (reader.End && !final)
                {
                    return lineStart; // \r\n may be split across reads: decide once the next byte is known
                }

                reader.IsNext((byte)'\n', advancePast: true);
            }

            Parse(line, ++number, parsed, errors);
        }

        return reader.Position;
    }

    private static void Parse(ReadOnlySequence<byte> line, int number, List<ProfileLine> parsed, List<LineError> errors)
    {
        if (line.IsSingleSegment)
        {
            Parse(line.FirstSpan, number, parsed, errors);
            return;
        }

        var length = checked((int)line.Length);
        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            line.CopyTo(rented);
            Parse(rented.AsSpan(0, length), number, parsed, errors);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static void Parse(ReadOnlySpan<byte> line, int number, List<ProfileLine> parsed, List<LineError> errors)
    {
        if (line.TrimStart(" \t"u8).IsEmpty)
        {
            return;
        }

        if (TryParseFast(line) is { } fast)
        {
            parsed.Add(new ProfileLine(number, fast));
            return;
        }

        // The general path: decode (invalid bytes become U+FFFD) and deserialize, exactly as a text reader would.
        var text = Encoding.UTF8.GetString(line);
        if (string.IsNullOrWhiteSpace(text))
        {
            return;
        }

        ProfileRequest? profile;
        try
        {
            profile = JsonSerializer.Deserialize<ProfileRequest>(text, PlatformJson.Options);
        }
        catch (JsonException)
        {
            profile = null;
        }

        if (profile is null)
        {
            errors.Add(new LineError(number, NotAProfile));
            return;
        }

        parsed.Add(new ProfileLine(number, new UserProfile
        {
            ExternalId = profile.ExternalId,
            Aliases = [.. (profile.Aliases ?? []).Select(a => a is null
                ? null!
                : new UserAlias { AliasName = a.AliasName ?? "", AliasLabel = a.AliasLabel ?? "" })],
            DeviceIds = profile.DeviceIds ?? [],
        }));
    }

    /// <summary>The common shape only: an object with at most one each of the three properties, strings as strings.</summary>
    private static UserProfile? TryParseFast(ReadOnlySpan<byte> line)
    {
        var reader = new Utf8JsonReader(line, new JsonReaderOptions { MaxDepth = 8 });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }

            string? externalId = null;
            UserAlias[]? aliases = null;
            string[]? devices = null;
            var seenExternalId = false;
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    // Only whitespace may follow the object.
                    return reader.Read()
                        ? null
                        : new UserProfile { ExternalId = externalId, Aliases = aliases ?? [], DeviceIds = devices ?? [] };
                }

                if (reader.ValueTextEquals("external_id"u8) && !seenExternalId)
                {
                    seenExternalId = true;
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String)
                    {
                        externalId = reader.GetString();
                    }
                    else if (reader.TokenType != JsonTokenType.Null)
                    {
                        return null;
                    }
                }
                else if (reader.ValueTextEquals("aliases"u8) && aliases is null)
                {
                    if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray || ReadAliases(ref reader) is not { } a)
                    {
                        return null;
                    }

                    aliases = a;
                }
                else if (reader.ValueTextEquals("device_ids"u8) && devices is null)
                {
                    if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray || ReadStrings(ref reader) is not { } d)
                    {
                        return null;
                    }

                    devices = d;
                }
                else
                {
                    return null;
                }
            }

            return null;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            return null; // malformed JSON or invalid UTF-8: the general path decides
        }
    }

    private static string[]? ReadStrings(ref Utf8JsonReader reader)
    {
        string? single = null;
        List<string>? more = null;
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.EndArray)
            {
                return more is not null ? [.. more] : single is not null ? [single] : [];
            }

            if (reader.TokenType != JsonTokenType.String)
            {
                return null;
            }

            var value = reader.GetString()!;
            if (single is null)
            {
                single = value;
            }
            else
            {
                (more ??= [single]).Add(value);
            }
        }

        return null;
    }

    private static UserAlias[]? ReadAliases(ref Utf8JsonReader reader)
    {
        List<UserAlias>? aliases = null;
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.EndArray)
            {
                return aliases is null ? [] : [.. aliases];
            }

            if (reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }

            string? name = null, label = null;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                var isName = reader.ValueTextEquals("alias_name"u8);
                if ((!isName && !reader.ValueTextEquals("alias_label"u8)) || (isName ? name : label) is not null)
                {
                    return null;
                }

                if (!reader.Read() || reader.TokenType != JsonTokenType.String)
                {
                    return null;
                }

                if (isName)
                {
                    name = reader.GetString()!;
                }
                else
                {
                    label = reader.GetString()!;
                }
            }

            (aliases ??= []).Add(new UserAlias { AliasName = name ?? "", AliasLabel = label ?? "" });
        }

        return null;
    }

    private sealed record ProfileRequest(
        [property: JsonPropertyName("external_id")] string? ExternalId,
        [property: JsonPropertyName("aliases")] List<AliasRequest?>? Aliases,
        [property: JsonPropertyName("device_ids")] List<string>? DeviceIds);

    private sealed record AliasRequest(
        [property: JsonPropertyName("alias_name")] string? AliasName,
        [property: JsonPropertyName("alias_label")] string? AliasLabel);
}
