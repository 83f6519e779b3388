using System.Text;
using CohortBridge.ImportGateway.Imports;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>The body parser in-process (the HTTP tests cover the same rules end to end with the default limits).</summary>
public sealed class PartnerRequestParserTests
{
    [Theory]
    [InlineData(1000, "Only 1,000 user_ids, device_ids, and aliases are allowed per request")]
    [InlineData(2500, "Only 2,500 user_ids, device_ids, and aliases are allowed per request")]
    [InlineData(5, "Only 5 user_ids, device_ids, and aliases are allowed per request")]
    public void TooManyIdentifiers_ConfiguredLimit_FormatsWithThousandsSeparator(int limit, string expected) =>
        Assert.Equal(expected, PartnerMessages.TooManyIdentifiers(limit));

    [Fact]
    public void ParseCohortChanges_ConfiguredLimitExceeded_ReportsIt()
    {
        var body = Encoding.UTF8.GetBytes("""{"cohort_id": "c", "cohort_changes": [{"user_ids": ["a", "b", "c"]}, {"aliases": [{"alias_name": "n", "alias_label": "l"}, 1, 2]}]}""");

        var request = PartnerRequestParser.ParseCohortChanges(body, 5)!;

        Assert.Equal(6, request.IdentifierCount);
        Assert.Equal(["Only 5 user_ids, device_ids, and aliases are allowed per request"], request.Errors);
    }

    [Theory]
    [InlineData("2026-11-22T19:20:30+01:00", "2026-11-22T18:20:30.0000000+00:00")]
    [InlineData("2026-11-22T19:20:30Z", "2026-11-22T19:20:30.0000000+00:00")]
    [InlineData("2026-11-22T19:20:30.123456Z", "2026-11-22T19:20:30.1234560+00:00")]
    [InlineData("2026-11-22T19:20:30", "2026-11-22T19:20:30.0000000+00:00")]
    [InlineData("2026-11-22", "2026-11-22T00:00:00.0000000+00:00")]
    public void ParseIso8601_ValidForms_ReadAsUtc(string text, string expected) =>
        Assert.Equal(expected, PartnerRequestParser.ParseIso8601(text)!.Value.ToString("O"));

    [Theory]
    [InlineData("")]
    [InlineData("yesterday")]
    [InlineData("22/11/2026")]
    [InlineData("2026-02-30T00:00:00Z")]
    [InlineData("2026-11-22T25:00:00Z")]
    [InlineData("1700000000")]
    public void ParseIso8601_InvalidForms_AreNull(string text) =>
        Assert.Null(PartnerRequestParser.ParseIso8601(text));

    // PostgreSQL's text cannot hold U+0000 (the sample keeps the raw JSON text, escaped). A lone surrogate escape is
    // well-formed JSON that throws when decoded: it used to turn the whole request into a 400. Both are invalid
    // identifiers, counted (API.md rule 5).
    [Theory]
    [InlineData("a\\u0000b", "\\u0000", "n\\u0000")]
    [InlineData("\\ud800", "x\\udfff", "\\ud800")]
    public void ParseCohortChanges_IdentifiersNoTextColumnCanHold_AreInvalid(string userId, string deviceId, string aliasName)
    {
        var alias = $$"""{"alias_name": "{{aliasName}}", "alias_label": "l"}""";
        var body = Encoding.UTF8.GetBytes($$"""
            {"cohort_id": "c", "cohort_changes": [{"user_ids": ["ok", "{{userId}}"], "device_ids": ["{{deviceId}}"],
             "aliases": [{{alias}}, {"alias_name": "n", "alias_label": "l"}]}]}
            """);

        var request = PartnerRequestParser.ParseCohortChanges(body, 1000)!;

        Assert.Empty(request.Errors);
        var change = Assert.Single(request.Changes);
        Assert.Equal(["ok"], change.ExternalIds);
        Assert.Empty(change.DeviceIds);
        Assert.Equal("n", Assert.Single(change.Aliases).AliasName);
        Assert.Equal([$"\"{userId}\"", $"\"{deviceId}\"", alias], change.InvalidIdentifiers);
    }

    [Fact]
    public void ParseCohortChanges_InvalidUtf8InAString_IsNoJsonObject() =>
        // JSON text is UTF-8: unlike a lone surrogate escape, a Latin-1 byte makes the body no JSON (400).
        Assert.Null(PartnerRequestParser.ParseCohortChanges([.. "{\"cohort_id\": \"c\", \"cohort_changes\": [{\"user_ids\": [\"caf"u8, 0xE9, .. "\"]}]}"u8], 1000));

    [Fact]
    public void ParseCohortName_CohortIdOrNameWithoutValidUnicode_NamesTheField()
    {
        var request = PartnerRequestParser.ParseCohortName(Encoding.UTF8.GetBytes("""{"cohort_id": "\ud800", "name": "\udc00", "created_at": "2026-11-22"}"""))!;

        Assert.Equal(["cohort_id must be a valid string", "name must be a non-empty string"], request.Errors);
    }

    [Fact]
    public void ParseCohortChanges_DuplicateKeys_LastWins()
    {
        var body = Encoding.UTF8.GetBytes("""{"cohort_id": 1, "cohort_id": "ok", "cohort_changes": 5, "cohort_changes": [{"device_ids": ["d"]}]}""");

        var request = PartnerRequestParser.ParseCohortChanges(body, 1000)!;

        Assert.Empty(request.Errors);
        Assert.Equal("ok", request.CohortId);
        Assert.Equal(["d"], Assert.Single(request.Changes).DeviceIds);
    }

    [Fact]
    public void ParseCohortName_Utf8Bom_IsAccepted()
    {
        var body = Encoding.UTF8.GetPreamble().Concat(Encoding.UTF8.GetBytes("""{"cohort_id": "c", "name": "n", "created_at": "2026-11-22"}""")).ToArray();

        var request = PartnerRequestParser.ParseCohortName(body);

        Assert.NotNull(request);
        Assert.Empty(request.Errors);
    }
}
