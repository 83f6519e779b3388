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
            return "external_id must be a non-empty string of at most 512 characters, without U+0000";
        }

        // Loops instead of LINQ: this runs once per line of a bulk upload.
        var aliases = profile.Aliases;
        for (var i = 0; i < aliases.Count; i++)
        {
            var a = aliases[i];
            if (a is null || !IdentityMatcher.IsValid(a.AliasName) || !IdentityMatcher.IsValid(a.AliasLabel))
            {
                return "aliases must be objects with non-empty alias_name and alias_label of at most 512 characters, without U+0000";
            }
        }

        var devices = profile.DeviceIds;
        for (var i = 0; i < devices.Count; i++)
        {
            if (!IdentityMatcher.IsValid(devices[i]))
            {
                return "device_ids must be non-empty strings of at most 512 characters, without U+0000";
            }
        }

        if (profile.ExternalId is null && profile.Aliases.Count == 0 && profile.DeviceIds.Count == 0)
        {
            return "a profile needs an external_id, an alias or a device_id";
        }

        return null;
    }

    /// <summary>
    /// Merges lines that share an identifier into groups, in order of their first line (the group id is that line's
    /// index in <paramref name="lines"/>). Lines of a group naming different external_ids are rejected.
    /// </summary>
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

        void Union(int other, int index)
        {
            var (a, b) = (Find(other), Find(index));
            if (a != b)
            {
                parent[Math.Max(a, b)] = Math.Min(a, b);
            }
        }

        // One map per identifier kind (no concatenated keys): the first line naming an identifier owns it.
        var externalIds = new Dictionary<string, int>(lines.Count, StringComparer.Ordinal);
        var devices = new Dictionary<string, int>(StringComparer.Ordinal);
        var aliases = new Dictionary<(string, string), int>();
        for (var i = 0; i < lines.Count; i++)
        {
            var p = lines[i].Profile;
            if (p.ExternalId is not null && !externalIds.TryAdd(p.ExternalId, i))
            {
                Union(externalIds[p.ExternalId], i);
            }

            foreach (var a in p.Aliases)
            {
                var key = (a.AliasName, a.AliasLabel);
                if (!aliases.TryAdd(key, i))
                {
                    Union(aliases[key], i);
                }
            }

            foreach (var d in p.DeviceIds)
            {
                if (!devices.TryAdd(d, i))
                {
                    Union(devices[d], i);
                }
            }
        }

        // A group's root is its smallest line index, so groups appear in order of their first line.
        var slot = new int[lines.Count];
        var groups = new List<MergedProfile>(lines.Count);
        var conflicted = new List<bool>(lines.Count);
        for (var i = 0; i < lines.Count; i++)
        {
            var root = Find(i);
            var p = lines[i].Profile;
            if (root == i)
            {
                slot[i] = groups.Count;
                groups.Add(new MergedProfile(root, p.ExternalId, [.. p.Aliases], [.. p.DeviceIds], [lines[i].Line]));
                conflicted.Add(false);
                continue;
            }

            var index = slot[root];
            var g = groups[index];
            if (p.ExternalId is not null && g.ExternalId is not null && g.ExternalId != p.ExternalId)
            {
                conflicted[index] = true;
            }
            else if (p.ExternalId is not null && g.ExternalId is null)
            {
                g = g with { ExternalId = p.ExternalId };
                groups[index] = g;
            }

            g.Aliases.AddRange(p.Aliases);
            g.DeviceIds.AddRange(p.DeviceIds);
            g.Lines.Add(lines[i].Line);
        }

        var merged = new List<MergedProfile>(groups.Count);
        for (var k = 0; k < groups.Count; k++)
        {
            var g = groups[k];
            if (conflicted[k])
            {
                errors.AddRange(g.Lines.Select(l =>
                    new LineError(l, "shares an identifier with another line of this batch that has a different external_id")));
                continue;
            }

            merged.Add(g.Aliases.Count > 1 || g.DeviceIds.Count > 1
                ? g with
                {
                    Aliases = g.Aliases.Distinct().ToList(),
                    DeviceIds = g.DeviceIds.Distinct(StringComparer.Ordinal).ToList(),
                }
                : g);
        }

        return merged;
    }
}
