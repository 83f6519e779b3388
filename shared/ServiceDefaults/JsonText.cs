using System.Text.Json;

namespace CohortBridge.ServiceDefaults;

/// <summary>
/// JSON strings that hold no valid Unicode: invalid UTF-8 bytes, or a lone surrogate escape such as <c>"\ud800"</c>.
/// <see cref="Utf8JsonReader"/> and <see cref="JsonDocument"/> accept both as well-formed and only throw
/// <see cref="InvalidOperationException"/> when the string is decoded, which would surface as a 500.
/// </summary>
public static class JsonText
{
    /// <summary>The current string token's text, or null when it holds no valid Unicode (or is JSON null).</summary>
    public static string? GetText(ref this Utf8JsonReader reader)
    {
        try
        {
            return reader.GetString();
        }
        catch (InvalidOperationException) when (reader.TokenType == JsonTokenType.String)
        {
            return null;
        }
    }

    /// <summary>True when every string and property name in <paramref name="element"/> decodes to valid Unicode.</summary>
    public static bool HoldsValidText(JsonElement element)
    {
        var pending = new Stack<JsonElement>();
        pending.Push(element);
        try
        {
            while (pending.TryPop(out var e))
            {
                switch (e.ValueKind)
                {
                    case JsonValueKind.String:
                        _ = e.GetString();
                        break;
                    case JsonValueKind.Array:
                        foreach (var item in e.EnumerateArray())
                        {
                            pending.Push(item);
                        }

                        break;
                    case JsonValueKind.Object:
                        foreach (var property in e.EnumerateObject())
                        {
                            _ = property.Name;
                            pending.Push(property.Value);
                        }

                        break;
                }
            }

            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }
}
