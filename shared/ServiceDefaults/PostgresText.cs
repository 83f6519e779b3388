namespace CohortBridge.ServiceDefaults;

/// <summary>
/// What PostgreSQL's text type can store: every character but U+0000. A value with one fails the statement that writes
/// or compares it, so input is checked for it where it is validated (a 400 or an invalid identifier, never a 500).
/// </summary>
public static class PostgresText
{
    public static bool CanStore(string value) => !value.Contains('\0', StringComparison.Ordinal);
}
