using CohortBridge.KeyService.Keys;
using CsCheck;

namespace CohortBridge.KeyService.Tests;

public sealed class KeySecretsTests
{
    [Theory]
    [InlineData(SecretKind.PartnerApiKey, "cbp_")]
    [InlineData(SecretKind.DataImportKey, "cbk_")]
    public void Generate_AnyKind_RecognisableFormatWithParsablePrefixAndVerifiableHash(SecretKind kind, string tag)
    {
        var secret = KeySecrets.Generate(kind);
        Assert.StartsWith(tag, secret.Value, StringComparison.Ordinal);
        Assert.Equal(4 + KeySecrets.PrefixLength + 1 + KeySecrets.SecretLength, secret.Value.Length);
        Assert.Equal(secret.Prefix, KeySecrets.TryGetPrefix(kind, secret.Value));
        Assert.True(KeySecrets.Verify(secret.Value, secret.Hash));
        Assert.Null(KeySecrets.TryGetPrefix(kind == SecretKind.PartnerApiKey ? SecretKind.DataImportKey : SecretKind.PartnerApiKey, secret.Value));
    }

    [Fact]
    public void Generate_ManyTimes_NeverRepeatsAndUsesWholeAlphabet()
    {
        var values = Enumerable.Range(0, 2000).Select(_ => KeySecrets.Generate(SecretKind.DataImportKey).Value).ToList();
        Assert.Equal(values.Count, values.Distinct().Count());
        Assert.Equal(values.Count, values.Select(v => v.Split('_')[1]).Distinct().Count());
        var alphabet = values.SelectMany(v => v.Split('_')[2]).Distinct().Count();
        Assert.Equal(62, alphabet);
    }

    [Fact]
    public void Verify_AnyOtherString_False()
    {
        var secret = KeySecrets.Generate(SecretKind.DataImportKey);
        Gen.String.Sample(s => !KeySecrets.Verify(s, secret.Hash) || s == secret.Value, iter: 2000);
        Assert.False(KeySecrets.Verify(secret.Value[..^1] + "!", secret.Hash));
    }

    [Fact]
    public void TryGetPrefix_MalformedValues_Null()
    {
        Gen.String.Sample(s => KeySecrets.TryGetPrefix(SecretKind.DataImportKey, s) is null || s.StartsWith("cbk_", StringComparison.Ordinal), iter: 2000);
        foreach (var bad in new[] { null, "", "cbk_", "cbk_AAAAAAAAAAAA_", "cbk_AAAAAAAAAAA!_" + new string('a', 32), "cbk-AAAAAAAAAAAA_" + new string('a', 32) })
        {
            Assert.Null(KeySecrets.TryGetPrefix(SecretKind.DataImportKey, bad));
        }
    }
}
