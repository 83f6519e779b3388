using System.Text.RegularExpressions;

namespace CohortBridge.KeyService.Keys;

/// <summary>The identifier patterns of API.md.</summary>
public static partial class Identifiers
{
    public static bool IsWorkspaceId(string? value) => value is not null && WorkspacePattern().IsMatch(value);

    public static bool IsPartner(string? value) => value is not null && PartnerPattern().IsMatch(value);

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex WorkspacePattern();

    [GeneratedRegex("^[a-z0-9][a-z0-9_-]{0,62}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex PartnerPattern();
}
