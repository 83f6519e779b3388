using System.Globalization;

namespace CohortBridge.ServiceDefaults;

/// <summary>
/// The <c>limit</c> query value of list endpoints, read as text: bound as <c>int?</c>, a value such as <c>abc</c> was
/// refused by the framework before the endpoint could answer with its own message (and became a 500 where
/// ThrowOnBadRequest is on).
/// </summary>
public static class PageLimit
{
    /// <summary>The message for a value that is not an integer between 1 and <paramref name="max"/>.</summary>
    public static string Invalid(int max) => $"limit must be an integer between 1 and {max}.";

    /// <summary>
    /// <paramref name="fallback"/> when the value is absent or empty; false when it is not a plain integer in 1..max.
    /// </summary>
    public static bool TryParse(string? text, int max, int fallback, out int limit)
    {
        limit = fallback;
        return string.IsNullOrEmpty(text)
            || (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out limit) && limit is >= 1 && limit <= max);
    }
}
