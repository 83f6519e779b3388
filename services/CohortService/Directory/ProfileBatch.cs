using CohortBridge.CohortService.Matching;
using CohortBridge.Contracts;

namespace CohortBridge.CohortService.Directory;

/// <summary>One profile of a bulk upsert with its 1-based line number (or position in a UserProfilesChanged).</summary>
public sealed record ProfileLine(int Line, UserProfile Profile);

public sealed record LineError(int Line, string Error);

/// <summary>Profiles of one batch after validation, merged where lines share an identifier (they name one user).</summary>
public sealed record MergedProfile(int Group, string? ExternalId, List<UserAlias> Aliases, List<string> DeviceIds, List<int> Lines);

/// <summary>
/// Validates profile lines and merges lines that share an identifier (union-find), so that a batch never creates two
/// users for one person. Lines whose merged group names two different external_ids are rejected.
/// </summary>
public static class ProfileBatch
{
    public static string? Validate(UserProfile profile)
    {
        if (profile.ExternalId is not null && !IdentityMatcher.IsValid(profile.ExternalId))
        {
            return "external_id must be a non-empty string of at most 512 characters";
        }

        if (profile.Aliases.Any(a => a is null || !IdentityMatcher.IsValid(a.AliasName) || !IdentityMatcher.IsValid(a.AliasLabel)))
        {
            return "aliases must be objects with non-empty alias_name and alias_label of at most 512 characters";
        }

        if (profile.DeviceIds.Any(d => !IdentityMatcher.IsValid(d)))
        {
            return "device_ids must be non-empty strings of at most 512 characters";
        }

        if (profile.ExternalId is null && profile.Aliases.Count == 0 && profile.DeviceIds.Count == 0)
        {
            return "a profile needs an external_id, an alias or a device_id";
        }

        return null;
    }

    public static List<MergedProfile> Merge(IReadOnlyList<ProfileLine> lines, List<LineError> errors)
    {
        var parent = new int[lines.Count];
        for (var i = 0; i < parent.Length; i++)
        {
            parent[i] = i;
        }

        int Find(int x)
        {
            while (parent[x] != x)
            {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }

            return x;
        }

        var owner = new Dictionary<string, int>(StringComparer.Ordinal);
        void Claim(string key, int index)
        {
            if (owner.TryGetValue(key, out var other))
            {
                var (a, b) = (Find(other), Find(index));
                if (a != b)
                {
                    parent[Math.Max(a, b)] = Math.Min(a, b);
                }
            }
            else
            {
                owner[key] = index;
            }
        }

        for (var i = 0; i < lines.Count; i++)
        {
            var p = lines[i].Profile;
            if (p.ExternalId is not null)
            {
                Claim("e\0" + p.ExternalId, i);
            }

            foreach (var a in p.Aliases)
            {
                Claim("a\0" + a.AliasName + "\0" + a.AliasLabel, i);
            }

            foreach (var d in p.DeviceIds)
            {
                Claim("d\0" + d, i);
            }
        }

        var groups = new Dictionary<int, MergedProfile>();
        var conflicted = new HashSet<int>();
        for (var i = 0; i < lines.Count; i++)
        {
            var root = Find(i);
            var p = lines[i].Profile;
            if (!groups.TryGetValue(root, out var g))
            {
                g = new MergedProfile(root, p.ExternalId, [], [], []);
                groups[root] = g;
            }
            else if (p.ExternalId is not null && g.ExternalId is not null && g.ExternalId != p.ExternalId)
            {
                conflicted.Add(root);
            }
            else if (p.ExternalId is not null && g.ExternalId is null)
            {
                g = g with { ExternalId = p.ExternalId };
                groups[root] = g;
            }

            g.Aliases.AddRange(p.Aliases);
            g.DeviceIds.AddRange(p.DeviceIds);
            g.Lines.Add(lines[i].Line);
        }

        var merged = new List<MergedProfile>(groups.Count);
        foreach (var (root, g) in groups)
        {
            if (conflicted.Contains(root))
            {
                errors.AddRange(g.Lines.Select(l =>
                    new LineError(l, "shares an identifier with another line of this batch that has a different external_id")));
                continue;
            }

            merged.Add(g with
            {
                Aliases = g.Aliases.Distinct().ToList(),
                DeviceIds = g.DeviceIds.Distinct(StringComparer.Ordinal).ToList(),
            });
        }

        return merged;
    }
}
