using System.Text;

namespace CohortBridge.Benchmarks;

/// <summary>
/// A deterministic synthetic user directory: user i is, by i mod 20,
/// 0–14 identified (external_id u{i}; every 4th also has an email alias),
/// 15–17 anonymous (device_id d{i}),
/// 18–19 identified after anonymous (first uploaded with device d{i}, then identified as u{i}).
/// </summary>
internal static class SyntheticWorkspace
{
    public static bool IsAnonymous(int i) => i % 20 is >= 15 and <= 17;

    public static bool IdentifiedLater(int i) => i % 20 >= 18;

    /// <summary>The identifier a partner would send for user i (external_id, or device_id for anonymous users).</summary>
    public static string SnapshotLine(int i) =>
        IsAnonymous(i) ? $"{{\"device_id\":\"d{i}\"}}" : $"{{\"external_id\":\"u{i}\"}}";

    /// <summary>First pass of the directory upload: every user as it was first seen.</summary>
    public static void WriteProfile(StringBuilder sb, int i)
    {
        if (IsAnonymous(i) || IdentifiedLater(i))
        {
            sb.Append("{\"device_ids\":[\"d").Append(i).Append("\"]}\n");
        }
        else if (i % 4 == 0)
        {
            sb.Append("{\"external_id\":\"u").Append(i).Append("\",\"aliases\":[{\"alias_name\":\"u").Append(i)
              .Append("@example.com\",\"alias_label\":\"email\"}]}\n");
        }
        else
        {
            sb.Append("{\"external_id\":\"u").Append(i).Append("\"}\n");
        }
    }

    /// <summary>Second pass: the anonymous-then-identified users get their external_id (matched by device).</summary>
    public static void WriteIdentification(StringBuilder sb, int i) =>
        sb.Append("{\"external_id\":\"u").Append(i).Append("\",\"device_ids\":[\"d").Append(i).Append("\"]}\n");

    /// <summary>External ids of identified users, in order, usable in diff imports.</summary>
    public static IEnumerable<int> IdentifiedUsers(int users)
    {
        for (var i = 0; i < users; i++)
        {
            if (!IsAnonymous(i))
            {
                yield return i;
            }
        }
    }
}
