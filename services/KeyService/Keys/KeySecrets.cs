using System.Security.Cryptography;
using System.Text;

namespace CohortBridge.KeyService.Keys;

/// <summary>The kind of secret; its tag starts the key so secret scanners recognise a leaked one.</summary>
public enum SecretKind
{
    /// <summary><c>cbp_…</c>: a partner API key (names the partner).</summary>
    PartnerApiKey,

    /// <summary><c>cbk_…</c>: a data import key (<c>client_secret</c>) of one workspace for one partner.</summary>
    DataImportKey,
}

/// <summary>A freshly generated secret: shown once, then only its prefix and hash are kept.</summary>
public sealed record GeneratedSecret(string Value, string Prefix, byte[] Hash);

/// <summary>
/// Secret format <c>&lt;tag&gt;_&lt;12-char lookup prefix&gt;_&lt;32 random chars&gt;</c>, base62, from a cryptographic RNG:
/// the random part alone carries 32·log2(62) ≈ 190 bits. The prefix (itself random, about 71 bits) is not secret: it
/// finds the row, and the SHA-256 of the whole value (enough for random secrets of this strength; no slow hash needed)
/// is compared in constant time.
/// </summary>
public static class KeySecrets
{
    public const int PrefixLength = 12;
    public const int SecretLength = 32;
    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    public static string TagOf(SecretKind kind) => kind == SecretKind.PartnerApiKey ? "cbp" : "cbk";

    public static GeneratedSecret Generate(SecretKind kind)
    {
        var prefix = RandomNumberGenerator.GetString(Alphabet, PrefixLength);
        var secret = RandomNumberGenerator.GetString(Alphabet, SecretLength);
        var value = $"{TagOf(kind)}_{prefix}_{secret}";
        return new GeneratedSecret(value, prefix, Hash(value));
    }

    /// <summary>The lookup prefix of a well-formed secret of <paramref name="kind"/>, else null (no database call needed).</summary>
    public static string? TryGetPrefix(SecretKind kind, string? value)
    {
        var tag = TagOf(kind);
        if (value is null || value.Length != tag.Length + 1 + PrefixLength + 1 + SecretLength
            || !value.StartsWith(tag, StringComparison.Ordinal) || value[tag.Length] != '_'
            || value[tag.Length + 1 + PrefixLength] != '_')
        {
            return null;
        }

        var prefix = value.Substring(tag.Length + 1, PrefixLength);
        var secret = value.AsSpan(tag.Length + 1 + PrefixLength + 1);
        return IsBase62(prefix) && IsBase62(secret) ? prefix : null;
    }

    public static byte[] Hash(string value) => SHA256.HashData(Encoding.UTF8.GetBytes(value));

    /// <summary>Constant-time comparison of the presented secret's hash with the stored one.</summary>
    public static bool Verify(string presented, byte[] storedHash) =>
        CryptographicOperations.FixedTimeEquals(Hash(presented), storedHash);

    private static bool IsBase62(ReadOnlySpan<char> s)
    {
        foreach (var c in s)
        {
            if (!char.IsAsciiLetterOrDigit(c))
            {
                return false;
            }
        }

        return true;
    }
}
