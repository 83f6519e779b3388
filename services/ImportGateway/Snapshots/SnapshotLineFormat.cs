using System.Text;
using System.Text.Json;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.ImportGateway.Snapshots;

/// <summary>
/// Reads one line of a snapshot body into the current chunk. A line that cannot be read as an identifier is counted as
/// invalid; it never fails the request. Only the first line decides whether the body is NDJSON or CSV at all (see
/// <see cref="SnapshotLineFormat.Create"/>): that one answers 400.
/// </summary>
public abstract class SnapshotLineFormat
{
    public const string NotNdJson = "request body must be NDJSON: one JSON object per line";
    public const string CsvHeaderInvalid =
        "CSV header must name the column external_id, device_id, or alias_name and alias_label";

    /// <summary>Reads a non-empty line (without its line break).</summary>
    public abstract void Read(ReadOnlySpan<byte> line, SnapshotChunkBuilder chunk);

    /// <summary>
    /// The format for a body whose first non-empty line is <paramref name="firstLine"/>, or the 400 message.
    /// For NDJSON the first line is data and must be a JSON object; for CSV it is the header.
    /// </summary>
    public static (SnapshotLineFormat? Format, bool FirstLineIsData, string? Error) Create(bool csv, ReadOnlySpan<byte> firstLine)
    {
        if (!csv)
        {
            return NdJsonFormat.IsJsonObject(firstLine) ? (new NdJsonFormat(), true, null) : (null, false, NotNdJson);
        }

        var header = CsvFormat.TryCreate(firstLine);
        return header is null ? (null, false, CsvHeaderInvalid) : (header, false, null);
    }
}

/// <summary><c>{"external_id": "..."}</c>, <c>{"device_id": "..."}</c> or <c>{"alias_name": "...", "alias_label": "..."}</c> per line.</summary>
public sealed class NdJsonFormat : SnapshotLineFormat
{
    // A partner's own columns may nest (traits objects); they are skipped, so any depth the reader allows will do.
    private static readonly JsonReaderOptions Options = new() { MaxDepth = 64 };

    public static bool IsJsonObject(ReadOnlySpan<byte> line)
    {
        try
        {
            var reader = new Utf8JsonReader(line, Options);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return false;
            }

            reader.Skip();
            return !reader.Read();
        }
        catch (JsonException)
        {
            return false;
        }
    }

    public override void Read(ReadOnlySpan<byte> line, SnapshotChunkBuilder chunk)
    {
        string? externalId = null, deviceId = null, aliasName = null, aliasLabel = null;
        var valid = true;
        try
        {
            var reader = new Utf8JsonReader(line, Options);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                chunk.AddInvalid(line);
                return;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var field = reader.ValueTextEquals("external_id"u8) ? 1
                    : reader.ValueTextEquals("device_id"u8) ? 2
                    : reader.ValueTextEquals("alias_name"u8) ? 3
                    : reader.ValueTextEquals("alias_label"u8) ? 4
                    : 0;
                reader.Read();
                if (field == 0)
                {
                    // Other properties (a partner's own columns) are ignored.
                    reader.Skip();
                    continue;
                }

                if (reader.TokenType != JsonTokenType.String)
                {
                    valid = false;
                    reader.Skip();
                    continue;
                }

                if (reader.GetText() is not { } value)
                {
                    valid = false;
                    continue;
                }

                switch (field)
                {
                    case 1: valid &= externalId is null; externalId = value; break;
                    case 2: valid &= deviceId is null; deviceId = value; break;
                    case 3: valid &= aliasName is null; aliasName = value; break;
                    default: valid &= aliasLabel is null; aliasLabel = value; break;
                }
            }

            if (reader.TokenType != JsonTokenType.EndObject || reader.Read())
            {
                valid = false;
            }
        }
        catch (JsonException)
        {
            valid = false;
        }

        var kinds = (externalId is null ? 0 : 1) + (deviceId is null ? 0 : 1) + (aliasName is null && aliasLabel is null ? 0 : 1);
        if (!valid || kinds != 1 || (aliasName is null) != (aliasLabel is null))
        {
            chunk.AddInvalid(line);
        }
        else if (externalId is not null)
        {
            chunk.AddExternalId(externalId);
        }
        else if (deviceId is not null)
        {
            chunk.AddDeviceId(deviceId);
        }
        else
        {
            chunk.AddAlias(aliasName!, aliasLabel!);
        }
    }
}

/// <summary>
/// CSV (RFC 4180 fields, one record per line) with a header naming <c>external_id</c>, <c>device_id</c> and/or the pair
/// <c>alias_name</c>,<c>alias_label</c> (names are case-insensitive; other columns are ignored). Each non-empty
/// identifier cell of a row is one identifier; a row with none, or with the wrong number of fields, is invalid.
/// </summary>
public sealed class CsvFormat : SnapshotLineFormat
{
    private readonly int _columns;
    private readonly int _externalId;
    private readonly int _deviceId;
    private readonly int _aliasName;
    private readonly int _aliasLabel;
    private readonly string?[] _fields;

    private static ReadOnlySpan<byte> Blanks => " \t"u8;

    private CsvFormat(int columns, int externalId, int deviceId, int aliasName, int aliasLabel)
    {
        (_columns, _externalId, _deviceId, _aliasName, _aliasLabel) = (columns, externalId, deviceId, aliasName, aliasLabel);
        _fields = new string?[columns];
    }

    public static CsvFormat? TryCreate(ReadOnlySpan<byte> header)
    {
        var names = new List<string>();
        if (!Split(header, names))
        {
            return null;
        }

        int Find(string name)
        {
            var found = -1;
            for (var i = 0; i < names.Count; i++)
            {
                if (string.Equals(names[i].Trim(), name, StringComparison.OrdinalIgnoreCase))
                {
                    if (found >= 0)
                    {
                        return -2;
                    }

                    found = i;
                }
            }

            return found;
        }

        var (externalId, deviceId, aliasName, aliasLabel) = (Find("external_id"), Find("device_id"), Find("alias_name"), Find("alias_label"));
        if (externalId == -2 || deviceId == -2 || aliasName == -2 || aliasLabel == -2 || (aliasName < 0) != (aliasLabel < 0))
        {
            return null;
        }

        return externalId < 0 && deviceId < 0 && aliasName < 0
            ? null
            : new CsvFormat(names.Count, externalId, deviceId, aliasName, aliasLabel);
    }

    public override void Read(ReadOnlySpan<byte> line, SnapshotChunkBuilder chunk)
    {
        if (!SplitInto(line, _fields))
        {
            chunk.AddInvalid(line);
            return;
        }

        var any = false;
        if (_externalId >= 0 && _fields[_externalId] is { Length: > 0 } externalId)
        {
            chunk.AddExternalId(externalId);
            any = true;
        }

        if (_deviceId >= 0 && _fields[_deviceId] is { Length: > 0 } deviceId)
        {
            chunk.AddDeviceId(deviceId);
            any = true;
        }

        if (_aliasName >= 0)
        {
            var (name, label) = (_fields[_aliasName], _fields[_aliasLabel]);
            if (name is { Length: > 0 } && label is { Length: > 0 })
            {
                chunk.AddAlias(name, label);
                any = true;
            }
            else if (name is { Length: > 0 } || label is { Length: > 0 })
            {
                chunk.AddInvalid(line);
                any = true;
            }
        }

        if (!any)
        {
            chunk.AddInvalid(line);
        }
    }

    /// <summary>Splits a record into exactly <c>fields.Length</c> fields; false when malformed or the count differs.</summary>
    private bool SplitInto(ReadOnlySpan<byte> line, string?[] fields)
    {
        if (_columns == 1 && line.IndexOfAny((byte)',', (byte)'"') < 0)
        {
            // The common case: one bare identifier per line.
            fields[0] = Encoding.UTF8.GetString(line.Trim(Blanks));
            return true;
        }

        var values = new List<string>(_columns);
        if (!Split(line, values) || values.Count != _columns)
        {
            return false;
        }

        for (var i = 0; i < _columns; i++)
        {
            fields[i] = values[i];
        }

        return true;
    }

    /// <summary>
    /// RFC 4180 fields of one line: <c>a,"b ""quoted"", c",d</c>. False on an unterminated or stray quote. Spaces and
    /// tabs around a field are dropped, as the header's are (<c>external_id, device_id</c> then <c>u1, d1</c>: a kept
    /// space would make " d1" an unknown device, and a snapshot would remove that user); a quoted value keeps its own.
    /// </summary>
    private static bool Split(ReadOnlySpan<byte> line, List<string> values)
    {
        var position = 0;
        while (true)
        {
            var rest = line[position..];
            var lead = rest.Length - rest.TrimStart(Blanks).Length;
            if (lead < rest.Length && rest[lead] == (byte)'"')
            {
                position += lead;
                rest = rest[lead..];
                var text = new StringBuilder();
                var i = 1;
                while (true)
                {
                    var quote = rest[i..].IndexOf((byte)'"');
                    if (quote < 0)
                    {
                        return false;
                    }

                    text.Append(Encoding.UTF8.GetString(rest.Slice(i, quote)));
                    i += quote + 1;
                    if (i < rest.Length && rest[i] == (byte)'"')
                    {
                        text.Append('"');
                        i++;
                        continue;
                    }

                    break;
                }

                values.Add(text.ToString());
                i = rest.Length - rest[i..].TrimStart(Blanks).Length;
                if (i == rest.Length)
                {
                    return true;
                }

                if (rest[i] != (byte)',')
                {
                    return false;
                }

                position += i + 1;
                continue;
            }

            var comma = rest.IndexOf((byte)',');
            var field = comma < 0 ? rest : rest[..comma];
            if (field.IndexOf((byte)'"') >= 0)
            {
                return false;
            }

            values.Add(Encoding.UTF8.GetString(field.Trim(Blanks)));
            if (comma < 0)
            {
                return true;
            }

            position += comma + 1;
        }
    }
}
