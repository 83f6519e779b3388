using CohortBridge.Contracts;
using CohortBridge.SegmentService.Projections;
using CsCheck;

namespace CohortBridge.SegmentService.Tests.Projections;

/// <summary>
/// The directory against a model that keeps every user's latest <see cref="DirectoryUser"/> and answers by scanning
/// them with API.md's rules: random batches of creations, identifications, identifier changes and deletions, over
/// ordinals in one page, across pages and far apart.
/// </summary>
public sealed class UserDirectoryPropertyTests
{
    // Ordinals near 0, across the 65,536-entry page boundaries, and high in the range.
    private static readonly Gen<int> Ordinal = Gen.Frequency(
        (3, Gen.Int[0, 40]),
        (2, Gen.Int[65_530, 65_545]),
        (1, Gen.Int[int.MaxValue - 3, int.MaxValue]));

    // Identifiers are drawn from small pools so that users take over, drop and re-take one another's identifiers only
    // through their own changes: each is tied to one ordinal ("u{ordinal}.{n}"), as CohortService keeps them unique.
    private static readonly Gen<DirectoryUser> User = Gen.Select(Ordinal, Gen.Int[0, 2], Gen.Int[0, 3], Gen.Int[0, 2], Gen.Bool, Gen.Int[0, 9])
        .Select((ordinal, ext, aliases, devices, identified, deleted) => new DirectoryUser
        {
            Ordinal = ordinal,
            ExternalId = ext == 0 ? null : $"u{ordinal}.{ext}",
            Aliases = [.. Enumerable.Range(0, aliases % 3).Select(a => new UserAlias { AliasName = $"a{ordinal}.{a + aliases}", AliasLabel = a == 0 ? "email" : "crm" })],
            DeviceIds = [.. Enumerable.Range(0, devices).Select(d => $"d{ordinal}.{d + devices}")],
            Identified = identified,
            Deleted = deleted == 0,
        });

    [Fact]
    public void Apply_RandomBatches_AnswersAsTheModel()
    {
        // Versions go up and down between batches, as events arrive late or are replayed; 0 is a publisher without them.
        Gen.Select(User.Array[1, 12], Gen.Long[0, 6]).Array[1, 8].Sample(batches =>
        {
            var directory = new UserDirectory();
            var model = new Dictionary<int, DirectoryUser>();
            var versions = new Dictionary<int, long>();
            var deleted = new HashSet<int>();
            foreach (var (batch, version) in batches)
            {
                var expectedStale = 0;
                foreach (var user in batch)
                {
                    // A deletion is final (CohortService never revives an ordinal); otherwise the higher version wins.
                    var held = versions.GetValueOrDefault(user.Ordinal);
                    if (deleted.Contains(user.Ordinal) || (version != 0 && version < held))
                    {
                        expectedStale += deleted.Contains(user.Ordinal) && user.Deleted ? 0 : 1;
                        continue;
                    }

                    versions[user.Ordinal] = Math.Max(version, held);
                    if (user.Deleted)
                    {
                        model.Remove(user.Ordinal);
                        deleted.Add(user.Ordinal);
                    }
                    else
                    {
                        model[user.Ordinal] = user;
                    }
                }

                Assert.Equal(expectedStale, directory.Apply(batch, version));
                AssertSame(model, directory, batches.SelectMany(b => b.Item1));
            }
        }, iter: 300);
    }

    [Fact]
    public void Apply_EntriesAfterDeletion_KeepTheUserDeleted()
    {
        var directory = new UserDirectory();
        var user = new DirectoryUser { Ordinal = 5, ExternalId = "u5", Identified = true };
        directory.Apply([user], 3);
        directory.Apply([user with { Deleted = true }], 4);

        // An older entry (a replayed event), and one from a publisher without versions: the user stays deleted.
        Assert.Equal(1, directory.Apply([user], 3));
        Assert.Equal(1, directory.Apply([user], 0));
        Assert.Null(directory.FindByExternalId("u5"));
        Assert.Empty(directory.LiveUsers.ToArray());

        // CohortService gives an identifier used again a new ordinal; a late entry of the deleted one does not take it.
        Assert.Equal(0, directory.Apply([new DirectoryUser { Ordinal = 11, ExternalId = "u5", Identified = true }], 5));
        Assert.Equal(1, directory.Apply([user], 3));
        Assert.Equal(11, directory.FindByExternalId("u5"));
        Assert.Equal([11], directory.LiveUsers.ToArray());
    }

    private static void AssertSame(Dictionary<int, DirectoryUser> model, UserDirectory directory, IEnumerable<DirectoryUser> seen)
    {
        Assert.Equal(model.Count, directory.UserCount);
        Assert.Equal(model.Keys.Order(), directory.LiveUsers.ToArray());

        var ordinals = model.Keys.Concat(seen.Select(u => u.Ordinal)).Append(0).Append(123_456).Distinct().ToArray();
        var identities = new MemberIdentity?[ordinals.Length];
        directory.Identify(ordinals, identities);
        for (var i = 0; i < ordinals.Length; i++)
        {
            Assert.Equal(model.TryGetValue(ordinals[i], out var user) ? IdentityOf(user) : null, identities[i]);
        }

        foreach (var user in seen)
        {
            var ext = user.ExternalId ?? $"u{user.Ordinal}.1";
            Assert.Equal(Owner(model, u => u.ExternalId == ext), directory.FindByExternalId(ext));
            foreach (var alias in user.Aliases)
            {
                Assert.Equal(
                    Owner(model, u => u.Aliases.Contains(alias)),
                    directory.FindByAlias(alias.AliasName, alias.AliasLabel));
            }

            foreach (var device in user.DeviceIds)
            {
                // API.md rule 3: a device_id matches anonymous users only.
                Assert.Equal(
                    Owner(model, u => !u.Identified && u.ExternalId is null && u.DeviceIds.Contains(device)),
                    directory.FindByDeviceId(device));
            }
        }
    }

    private static int? Owner(Dictionary<int, DirectoryUser> model, Func<DirectoryUser, bool> holds) =>
        model.Values.Where(holds).Select(u => (int?)u.Ordinal).SingleOrDefault();

    private static MemberIdentity IdentityOf(DirectoryUser user) =>
        user.ExternalId is not null ? new MemberIdentity(user.ExternalId, null, null)
        : user.Aliases.Count > 0 ? new MemberIdentity(null, user.Aliases[0], null)
        : new MemberIdentity(null, null, user.DeviceIds.Count > 0 ? user.DeviceIds[0] : null);
}
