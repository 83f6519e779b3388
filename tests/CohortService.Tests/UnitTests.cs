using CohortBridge.CohortService.Directory;
using CohortBridge.CohortService.Imports;
using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;
using CsCheck;

namespace CohortBridge.CohortService.Tests;

/// <summary>Pure logic: the net change of ordered change sets and the merge of bulk lines.</summary>
public sealed class UnitTests
{
    [Fact]
    public void NetChange_RandomAddRemoveSequences_EqualsSetDifferenceOfBeforeAndAfter()
    {
        // Model: apply the operations to a set; the net change is after − before and before − after.
        var gen = Gen.Select(Gen.Int[0, 9].Array[0, 6], Gen.Select(Gen.Bool, Gen.Int[0, 9].Array[0, 4]).Array[0, 6]);
        gen.Sample(c =>
        {
            var (initial, ops) = c;
            var members = new HashSet<int>(initial);
            var before = new HashSet<int>(members);
            var net = new NetChange();
            foreach (var (remove, ordinals) in ops)
            {
                // What the database returns: rows actually inserted / deleted.
                var effective = remove
                    ? ordinals.Distinct().Where(members.Remove).ToArray()
                    : ordinals.Distinct().Where(members.Add).ToArray();
                if (remove)
                {
                    net.Removed(effective);
                }
                else
                {
                    net.Added(effective);
                }
            }

            Assert.Equal(members.Except(before).Order(), net.AddedOrdinals.Order());
            Assert.Equal(before.Except(members).Order(), net.RemovedOrdinals.Order());
        }, iter: 500);
    }

    [Fact]
    public void ProfileBatch_LinesSharingIdentifiers_MergeIntoOneProfile()
    {
        var errors = new List<LineError>();
        var merged = ProfileBatch.Merge(
        [
            new ProfileLine(1, new UserProfile { DeviceIds = ["d1"] }),
            new ProfileLine(2, new UserProfile { ExternalId = "x", DeviceIds = ["d1", "d2"] }),
            new ProfileLine(3, new UserProfile { ExternalId = "y" }),
            new ProfileLine(4, new UserProfile { ExternalId = "p", DeviceIds = ["shared"] }),
            new ProfileLine(5, new UserProfile { ExternalId = "q", DeviceIds = ["shared"] }),
        ], errors);

        Assert.Equal(2, merged.Count);
        var x = merged.Single(m => m.ExternalId == "x");
        Assert.Equal([1, 2], x.Lines);
        Assert.Equal(["d1", "d2"], x.DeviceIds);
        Assert.Equal([4, 5], errors.Select(e => e.Line).Order());
    }

    [Theory]
    [InlineData(null, "an external_id, an alias or a device_id")]
    [InlineData("", "external_id must be")]
    public void ProfileBatch_InvalidProfile_HasReason(string? externalId, string reason)
    {
        var error = ProfileBatch.Validate(new UserProfile { ExternalId = externalId });
        Assert.Contains(reason, error);
    }

    [Fact]
    public void ImportStatistics_Outcomes_BalanceAndCapSample()
    {
        var stats = new ImportStatistics();
        stats.Count([.. Enumerable.Range(0, 30).Select(i => new IdentifierOutcome(
            IdentifierKind.ExternalId, $"id-{i}", i % 3 == 0 ? i : null, null, i % 3 == 0 ? null : UnmatchedReason.UnknownExternalId))]);
        Assert.Equal(30, stats.Received);
        Assert.Equal(stats.Received, stats.Matched + stats.Unmatched.Values.Sum());
        Assert.Equal(20, stats.UnmatchedSample.Count);
    }

    [Fact]
    public void OrdinalSet_RandomSets_ExceptEqualsSortedSetDifference()
    {
        // Ordinals around word boundaries and far beyond the initial capacity (the set grows).
        var ordinal = Gen.OneOf(Gen.Int[0, 200], Gen.Int[60_000, 70_000], Gen.Int[0, 3_000_000]);
        Gen.Select(ordinal.Array[0, 300], ordinal.Array[0, 300]).Sample((left, right) =>
        {
            var a = new Snapshots.OrdinalSet();
            var b = new Snapshots.OrdinalSet();
            foreach (var o in left)
            {
                a.Add(o);
            }

            foreach (var o in right)
            {
                b.Add(o);
            }

            Assert.Equal(left.Except(right).Order(), a.Except(b));
            Assert.Equal(right.Except(left).Order(), b.Except(a));
        });
    }
}
