using System.Text;
using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.ImportGateway.Snapshots;

/// <summary>
/// Collects the identifiers of the chunk being read. Every identifier counts towards the chunk size, invalid ones too;
/// invalid lines keep only a short prefix of their raw text (they are counted one by one downstream).
/// </summary>
public sealed class SnapshotChunkBuilder(int invalidSampleLength)
{
    private List<string> _externalIds = [];
    private List<string> _deviceIds = [];
    private List<UserAlias> _aliases = [];
    private List<string> _invalid = [];

    /// <summary>Identifiers in this chunk so far.</summary>
    public int Count { get; private set; }

    /// <summary>Identifiers in every chunk taken so far plus this one.</summary>
    public long Total { get; private set; }

    /// <summary>Invalid lines in every chunk taken so far plus this one.</summary>
    public long InvalidTotal { get; private set; }

    // A value with U+0000 (a CSV cell can hold one) is invalid: PostgreSQL's text cannot store it, and staging it
    // would fail the whole snapshot.
    public void AddExternalId(string value)
    {
        if (!PostgresText.CanStore(value))
        {
            AddInvalid(value);
            return;
        }

        _externalIds.Add(value);
        Added();
    }

    public void AddDeviceId(string value)
    {
        if (!PostgresText.CanStore(value))
        {
            AddInvalid(value);
            return;
        }

        _deviceIds.Add(value);
        Added();
    }

    public void AddAlias(string name, string label)
    {
        if (!PostgresText.CanStore(name) || !PostgresText.CanStore(label))
        {
            AddInvalid($"{name}:{label}");
            return;
        }

        _aliases.Add(new UserAlias { AliasName = name, AliasLabel = label });
        Added();
    }

    public void AddInvalid(ReadOnlySpan<byte> raw) =>
        AddInvalid(Encoding.UTF8.GetString(raw[..Math.Min(raw.Length, invalidSampleLength * 4)]));

    private void AddInvalid(string text)
    {
        // The sample is stored as text too: U+0000 shows as U+FFFD.
        text = text.Replace('\0', '\uFFFD');
        _invalid.Add(text.Length > invalidSampleLength ? text[..invalidSampleLength] + "…" : text);
        InvalidTotal++;
        Added();
    }

    /// <summary>Hands the collected identifiers over as a chunk and starts an empty one.</summary>
    public SnapshotChunk Take(int sequence, bool isLast, int? chunkCount)
    {
        var chunk = new SnapshotChunk
        {
            Sequence = sequence,
            IsLast = isLast,
            ChunkCount = chunkCount,
            ExternalIds = _externalIds,
            DeviceIds = _deviceIds,
            Aliases = _aliases,
            InvalidIdentifiers = _invalid,
        };
        var capacity = Math.Max(16, Count);
        _externalIds = new List<string>(_externalIds.Count > 0 ? capacity : 0);
        _deviceIds = new List<string>(_deviceIds.Count > 0 ? capacity : 0);
        _aliases = new List<UserAlias>(_aliases.Count > 0 ? capacity : 0);
        _invalid = [];
        Count = 0;
        return chunk;
    }

    private void Added()
    {
        Count++;
        Total++;
    }
}
