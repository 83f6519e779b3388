using CohortBridge.CohortService.Directory;
using CohortBridge.CohortService.Matching;
using CohortBridge.CohortService.Outbox;
using CohortBridge.Contracts;
using CsCheck;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// The set-based matcher on a real database against a plain in-memory model of the rules of shared/API.md:
/// random directories (identified, anonymous, anonymous-then-identified users) and random identifier lists.
/// </summary>
public sealed class MatcherPropertyTests : IAsyncLifetime
{
    private NpgsqlDataSource _dataSource = null!;
    private UserDirectory _directory = null!;

    public async Task InitializeAsync()
    {
        _dataSource = await CohortServiceHost.MigratedDataSourceAsync("cohorts_prop");
        _directory = new UserDirectory(_dataSource, new OutboxSignal(), Options.Create(new CohortsOptions()), NullLogger<UserDirectory>.Instance);
    }

    public async Task DisposeAsync() => await _dataSource.DisposeAsync();

    private sealed record UserSpec(int? Ext, int[] Aliases, int[] Devices, bool IdentifyLater);

    private static string Ext(int i) => $"e{i}";

    private static UserAlias Alias(int i) => new() { AliasName = "crm", AliasLabel = $"a{i}" };

    private static string Device(int i) => $"d{i}";

    private static readonly Gen<UserSpec> GenUser = Gen.Select(
        Gen.Int[0, 6].Select(i => i == 6 ? (int?)null : i),
        Gen.Int[0, 6].Array[0, 2],
        Gen.Int[0, 6].Array[0, 2],
        Gen.Bool,
        (e, a, d, later) => new UserSpec(e, a, d, later));

    // Identifier indexes 0..7 (pool has 0..6, 7 is never in the directory); -1 is empty, -2 is over 512 characters.
    private static readonly Gen<int> GenRef = Gen.Int[-2, 7];

    private static readonly Gen<(List<UserSpec> Users, int[] Exts, int[] Aliases, int[] Devices)> GenCase = Gen.Select(
        GenUser.List[0, 8], GenRef.Array[0, 8], GenRef.Array[0, 8], GenRef.Array[0, 8]);

    private static string Text(int r, Func<int, string> f) => r switch { -1 => "", -2 => new string('z', 513), _ => f(r) };

    [Fact]
    public void Matcher_RandomDirectoriesAndIdentifiers_AgreesWithModel()
    {
        GenCase.Sample(c => RunAsync(c.Users, c.Exts, c.Aliases, c.Devices).GetAwaiter().GetResult(), iter: 60, threads: 1);
    }

    private async Task RunAsync(List<UserSpec> specs, int[] exts, int[] aliases, int[] devices)
    {
        var ws = "prop-" + Guid.NewGuid().ToString("N")[..12];

        // The model: identifiers are unique per workspace, so later users lose identifiers earlier ones took.
        var extOwner = new Dictionary<int, int>();
        var aliasOwner = new Dictionary<int, int>();
        var deviceOwner = new Dictionary<int, int>();
        var created = new List<UserSpec>();
        foreach (var s in specs)
        {
            var ext = s.Ext is { } e && !extOwner.ContainsKey(e) ? s.Ext : null;
            var a = s.Aliases.Distinct().Where(x => !aliasOwner.ContainsKey(x)).ToArray();
            var d = s.Devices.Distinct().Where(x => !deviceOwner.ContainsKey(x)).ToArray();
            if (ext is null && a.Length == 0 && d.Length == 0)
            {
                continue;
            }

            var ordinal = created.Count;
            created.Add(new UserSpec(ext, a, d, s.IdentifyLater && ext is not null && (a.Length > 0 || d.Length > 0)));
            if (ext is { } x1)
            {
                extOwner[x1] = ordinal;
            }

            foreach (var x in a)
            {
                aliasOwner[x] = ordinal;
            }

            foreach (var x in d)
            {
                deviceOwner[x] = ordinal;
            }
        }

        // Through the real directory: create (anonymous first where identified later), then identify.
        var firstPass = created.Select((u, i) => new ProfileLine(i + 1, new UserProfile
        {
            ExternalId = u.IdentifyLater || u.Ext is null ? null : Ext(u.Ext.Value),
            Aliases = [.. u.Aliases.Select(Alias)],
            DeviceIds = [.. u.Devices.Select(Device)],
        })).ToList();
        var r1 = await _directory.UpsertAsync(ws, firstPass, CancellationToken.None);
        Assert.Equal(0, r1.Rejected);
        var secondPass = created.Where(u => u.IdentifyLater).Select((u, i) => new ProfileLine(i + 1, new UserProfile
        {
            ExternalId = Ext(u.Ext!.Value),
            DeviceIds = u.Devices.Length > 0 ? [Device(u.Devices[0])] : [],
            Aliases = u.Devices.Length > 0 ? [] : [Alias(u.Aliases[0])],
        })).ToList();
        var r2 = await _directory.UpsertAsync(ws, secondPass, CancellationToken.None);
        Assert.Equal(secondPass.Count, r2.Identified);

        var change = new CohortChange
        {
            ExternalIds = [.. exts.Select(r => Text(r, Ext))],
            Aliases = [.. aliases.Select(r => r < 0 ? new UserAlias { AliasName = "crm", AliasLabel = Text(r, _ => "") } : Alias(r))],
            DeviceIds = [.. devices.Select(r => Text(r, Device))],
            InvalidIdentifiers = ["1"],
        };
        await using var conn = await _dataSource.OpenConnectionAsync();
        var outcomes = await IdentityMatcher.MatchAsync(conn, null, ws, change, CancellationToken.None);

        var expected = new List<(int?, string?)>();
        expected.AddRange(exts.Select(r => r < 0 ? (null, UnmatchedReason.InvalidIdentifier)
            : extOwner.TryGetValue(r, out var o) ? ((int?)o, (string?)null) : (null, UnmatchedReason.UnknownExternalId)));
        expected.AddRange(aliases.Select(r => r < 0 ? (null, UnmatchedReason.InvalidIdentifier)
            : aliasOwner.TryGetValue(r, out var o) ? ((int?)o, (string?)null) : (null, UnmatchedReason.UnknownAlias)));
        expected.AddRange(devices.Select(r => r < 0 ? (null, UnmatchedReason.InvalidIdentifier)
            : !deviceOwner.TryGetValue(r, out var o) ? (null, UnmatchedReason.UnknownDeviceId)
            : created[o].Ext is not null ? (null, UnmatchedReason.DeviceIdOfIdentifiedUser)
            : ((int?)o, (string?)null)));
        expected.Add((null, UnmatchedReason.InvalidIdentifier));

        Assert.Equal(expected, outcomes.Select(o => (o.Ordinal, o.Reason)));
    }
}
