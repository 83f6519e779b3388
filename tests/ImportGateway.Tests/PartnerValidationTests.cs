using System.Net;
using System.Text.Json;
using CohortBridge.Contracts;
using static CohortBridge.ImportGateway.Tests.PartnerHttp;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>The compatible POST endpoints through HTTP: status codes, exact texts, connector quirks, published messages.</summary>
[Collection(GatewayCollection.Name)]
public sealed class PartnerValidationTests(GatewayFixture fx)
{
    private const string ChangesShape =
        "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object";

    private HttpClient Client => fx.Gateway.Client;

    private string Changes(string changesJson, string cohortId = "spring") => ChangesBody(fx.PartnerApiKey, fx.ClientSecret, changesJson, cohortId);

    [Fact]
    public async Task PostCohorts_ValidBody_Returns202AndPublishesOneNameMessage()
    {
        var reply = await PostAsync(Client, NamePath, NameBody(fx.PartnerApiKey, fx.ClientSecret, "name-test", "Name test"));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        Assert.Equal("success", reply.Message);
        var (messageId, message) = Assert.Single(await fx.WaitForPublishedAsync(reply.ImportId));
        Assert.Equal(reply.ImportId, messageId);
        Assert.Equal(CohortExportKind.Name, message.Kind);
        Assert.Equal(fx.Workspace, message.WorkspaceId);
        Assert.Equal(GatewayFixture.Partner, message.Partner);
        Assert.Equal("name-test", message.CohortId);
        Assert.Equal("Name test", message.Name);
        Assert.Equal(new DateTimeOffset(2026, 11, 22, 18, 20, 30, TimeSpan.Zero), message.CreatedAt);
    }

    [Fact]
    public async Task PostUsers_ValidChanges_PublishesChangesInOrder()
    {
        var reply = await PostAsync(Client, ChangesPath, Changes("""
            [{"user_ids": ["u1", "u2"], "device_ids": ["d1"], "aliases": [{"alias_name": "a1", "alias_label": "crm"}]},
             {"user_ids": ["u1"], "should_remove": true}]
            """));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var (_, message) = Assert.Single(await fx.WaitForPublishedAsync(reply.ImportId));
        Assert.Equal(CohortExportKind.Changes, message.Kind);
        Assert.Equal(2, message.Changes!.Count);
        Assert.Equal(["u1", "u2"], message.Changes[0].ExternalIds);
        Assert.Equal(["d1"], message.Changes[0].DeviceIds);
        Assert.Equal("a1", Assert.Single(message.Changes[0].Aliases).AliasName);
        Assert.False(message.Changes[0].ShouldRemove);
        Assert.True(message.Changes[1].ShouldRemove);
    }

    public static TheoryData<string> ConnectorQuirks => new()
    {
        """[{"user_ids": ["u1"], "device_ids": [], "aliases": []}]""",
        """[{"user_ids": null, "device_ids": ["d1"], "aliases": null}]""",
        """[{"user_ids": [], "device_ids": [], "aliases": [], "should_remove": false}]""",
        """[{"user_ids": null, "device_ids": null, "aliases": [{"alias_name": "a", "alias_label": "b"}], "should_remove": null}]""",
        """[{"aliases": [{"alias_name": "a", "alias_label": "b"}]}]""",
        """[]""",
    };

    [Theory]
    [MemberData(nameof(ConnectorQuirks))]
    public async Task PostUsers_ConnectorQuirk_Returns202(string changes)
    {
        var reply = await PostAsync(Client, ChangesPath, Changes(changes));

        Assert.True(reply.Status == HttpStatusCode.Accepted, reply.ToString());
        Assert.Equal("success", reply.Message);
        var (_, message) = Assert.Single(await fx.WaitForPublishedAsync(reply.ImportId));
        Assert.All(message.Changes!, c => Assert.False(c.ShouldRemove));
    }

    [Fact]
    public async Task PostUsers_EmptyChangesWithInvalidSecret_Returns401()
    {
        var reply = await PostAsync(Client, ChangesPath, ChangesBody(fx.PartnerApiKey, "not-a-real-secret", "[]"));

        Assert.Equal(HttpStatusCode.Unauthorized, reply.Status);
        Assert.Equal("Invalid client secret", reply.Message);
    }

    [Fact]
    public async Task PostUsers_EmptyChangesWithInvalidPartnerKey_Returns401()
    {
        var reply = await PostAsync(Client, ChangesPath, ChangesBody("wrong-partner-key", fx.ClientSecret, "[]"));

        Assert.Equal(HttpStatusCode.Unauthorized, reply.Status);
        Assert.Equal("Invalid Partner API key", reply.Message);
    }

    [Fact]
    public async Task PostUsers_KeyOfAnotherPartner_Returns401PartnerNotEnabledWithSecretPrefix()
    {
        var path = $"partners/{GatewayFixture.OtherPartner}/cohorts/users";
        var reply = await PostAsync(Client, path, ChangesBody(fx.OtherPartnerApiKey, fx.ClientSecret, "[]"));

        Assert.Equal(HttpStatusCode.Unauthorized, reply.Status);
        Assert.Equal($"Partner not enabled for client with client secret: {fx.ClientSecret[..4]}\u2026", reply.Message);
    }

    [Fact]
    public async Task PostUsers_InvalidCredentialsAndInvalidFields_Returns401First()
    {
        var reply = await PostAsync(Client, ChangesPath, ChangesBody(fx.PartnerApiKey, "bad-secret", "42", cohortId: ""));

        Assert.Equal(HttpStatusCode.Unauthorized, reply.Status);
        Assert.Equal("Invalid client secret", reply.Message);
    }

    public static TheoryData<string, string> ChangesErrors => new()
    {
        { """{"cohort_changes": []}""", "cohort_id must be a valid string" },
        { """{"cohort_id": 12, "cohort_changes": []}""", "cohort_id must be a valid string" },
        { """{"cohort_id": "", "cohort_changes": []}""", "cohort_id must be a valid string" },
        { $$"""{"cohort_id": "{{new string('c', 256)}}", "cohort_changes": []}""", "cohort_id must be a valid string" },
        { """{"cohort_id": "x"}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": null}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": {"user_ids": ["a"]}}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [1]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{}]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{"should_remove": true}]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{"user_ids": "a"}]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{"device_ids": {"a": 1}}]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{"aliases": "a"}]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{"user_ids": ["a"], "should_remove": "yes"}]}""", ChangesShape },
        // At least one of the three keys must be an array; null is fine only for the others.
        { """{"cohort_id": "x", "cohort_changes": [{"user_ids": null}]}""", ChangesShape },
        { """{"cohort_id": "x", "cohort_changes": [{"user_ids": null, "device_ids": null, "aliases": null}]}""", ChangesShape },
        // PostgreSQL's text cannot hold U+0000: accepted, such a cohort_id would fail the import (and the gateway's writes).
        { """{"cohort_id": "a\u0000b", "cohort_changes": []}""", "cohort_id must be a valid string" },
    };

    [Theory]
    [MemberData(nameof(ChangesErrors))]
    public async Task PostUsers_InvalidField_Returns400WithExactText(string fields, string expected)
    {
        var body = fields.Insert(1, $"\"partner_api_key\": \"{fx.PartnerApiKey}\", \"client_secret\": \"{fx.ClientSecret}\", ");

        var reply = await PostAsync(Client, ChangesPath, body);

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal(expected, reply.Message);
    }

    public static TheoryData<string, string> NameErrors => new()
    {
        { """{"name": "n", "created_at": "2026-11-22T19:20:30Z"}""", "cohort_id must be a valid string" },
        { """{"cohort_id": ["x"], "name": "n", "created_at": "2026-11-22T19:20:30Z"}""", "cohort_id must be a valid string" },
        { """{"cohort_id": "x", "created_at": "2026-11-22T19:20:30Z"}""", "name must be a non-empty string" },
        { """{"cohort_id": "x", "name": "", "created_at": "2026-11-22T19:20:30Z"}""", "name must be a non-empty string" },
        { """{"cohort_id": "x", "name": 5, "created_at": "2026-11-22T19:20:30Z"}""", "name must be a non-empty string" },
        { """{"cohort_id": "x", "name": "a\u0000b", "created_at": "2026-11-22T19:20:30Z"}""", "name must be a non-empty string" },
        { """{"cohort_id": "x", "name": "n"}""", "created_at must be a valid time as an ISO-8601 string" },
        { """{"cohort_id": "x", "name": "n", "created_at": "yesterday"}""", "created_at must be a valid time as an ISO-8601 string" },
        { """{"cohort_id": "x", "name": "n", "created_at": "2026-13-45T99:00:00Z"}""", "created_at must be a valid time as an ISO-8601 string" },
        { """{"cohort_id": "x", "name": "n", "created_at": 1700000000}""", "created_at must be a valid time as an ISO-8601 string" },
    };

    [Theory]
    [MemberData(nameof(NameErrors))]
    public async Task PostCohorts_InvalidField_Returns400WithExactText(string fields, string expected)
    {
        var body = fields.Insert(1, $"\"partner_api_key\": \"{fx.PartnerApiKey}\", \"client_secret\": \"{fx.ClientSecret}\", ");

        var reply = await PostAsync(Client, NamePath, body);

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal(expected, reply.Message);
    }

    [Fact]
    public async Task PostCohorts_SeveralInvalidFields_ListsAllInErrors()
    {
        var body = $$"""{"partner_api_key": "{{fx.PartnerApiKey}}", "client_secret": "{{fx.ClientSecret}}", "cohort_id": 1, "name": "", "created_at": "no"}""";

        var reply = await PostAsync(Client, NamePath, body);

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal("cohort_id must be a valid string", reply.Message);
        Assert.Equal(
            ["cohort_id must be a valid string", "name must be a non-empty string", "created_at must be a valid time as an ISO-8601 string"],
            reply.Json.GetProperty("errors").EnumerateArray().Select(e => e.GetString()!).ToArray());
    }

    [Fact]
    public async Task PostUsers_MoreThanLimitIdentifiers_Returns400WithFormattedLimit()
    {
        var ids = JsonSerializer.Serialize(Enumerable.Range(0, 600).Select(i => $"u{i}"));
        var devices = JsonSerializer.Serialize(Enumerable.Range(0, 400).Select(i => $"d{i}"));
        var body = Changes($$"""[{"user_ids": {{ids}}, "device_ids": {{devices}}, "aliases": [{"alias_name": "a", "alias_label": "b"}]}]""");

        var reply = await PostAsync(Client, ChangesPath, body);

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal("Only 1,000 user_ids, device_ids, and aliases are allowed per request", reply.Message);
    }

    [Fact]
    public async Task PostUsers_ExactlyLimitIdentifiers_Returns202()
    {
        var ids = JsonSerializer.Serialize(Enumerable.Range(0, 1000).Select(i => $"u{i}"));

        var reply = await PostAsync(Client, ChangesPath, Changes($$"""[{"user_ids": {{ids}}}]"""));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var (_, message) = Assert.Single(await fx.WaitForPublishedAsync(reply.ImportId));
        Assert.Equal(1000, message.Changes![0].ExternalIds.Count);
    }

    [Fact]
    public async Task PostUsers_UnusableIdentifiers_AcceptedAndPassedAsInvalid()
    {
        var longId = new string('x', 513);
        var reply = await PostAsync(Client, ChangesPath, Changes($$"""
            [{"user_ids": ["ok", 42, "", {"a": 1}, "{{longId}}", null], "device_ids": [true],
              "aliases": [{"alias_name": "a"}, "plain", {"alias_name": "n", "alias_label": "l"}]}]
            """));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var change = Assert.Single(Assert.Single(await fx.WaitForPublishedAsync(reply.ImportId)).Message.Changes!);
        Assert.Equal(["ok"], change.ExternalIds);
        Assert.Single(change.Aliases);
        Assert.Equal(8, change.InvalidIdentifiers.Count);
        Assert.Contains("42", change.InvalidIdentifiers);
        Assert.Contains("\"\"", change.InvalidIdentifiers);
        Assert.All(change.InvalidIdentifiers, raw => Assert.True(raw.Length <= 65, raw));
    }

    [Fact]
    public async Task PostUsers_UnknownFields_AreIgnored()
    {
        var body = $$"""{"partner_api_key": "{{fx.PartnerApiKey}}", "client_secret": "{{fx.ClientSecret}}", "cohort_id": "x", "extra": {"deep": [1, 2]}, "cohort_changes": [{"user_ids": ["a"], "note": "hi"}]}""";

        var reply = await PostAsync(Client, ChangesPath, body);

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
    }

    public static TheoryData<string> NotObjects => new()
    {
        "", "   ", "null", "[]", "\"text\"", "42", "{", "{\"cohort_id\": }", "{} trailing", "{\"a\": 1,}", "not json at all",
        new string('[', 5000) + new string(']', 5000),
        "{\"x\": " + new string('[', 100) + new string(']', 100) + "}",
    };

    [Theory]
    [MemberData(nameof(NotObjects))]
    public async Task Post_BodyNotJsonObject_Returns400(string body)
    {
        foreach (var path in new[] { NamePath, ChangesPath })
        {
            var reply = await PostAsync(Client, path, body);

            Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
            Assert.Equal("request body must be a JSON object", reply.Message);
        }
    }

    [Fact]
    public async Task Post_InvalidUtf8_Returns400()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, ChangesPath)
        {
            Content = new ByteArrayContent([.. "{\"cohort_id\": \""u8.ToArray(), 0xff, 0xfe, .. "\"}"u8.ToArray()]),
        };
        request.Content.Headers.ContentType = new("application/json");

        var reply = await SendAsync(Client, request);

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal("request body must be a JSON object", reply.Message);
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData(null)]
    public async Task Post_WrongContentType_Returns415(string? contentType)
    {
        var reply = await PostAsync(Client, ChangesPath, Changes("[]"), contentType);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, reply.Status);
        Assert.Equal("content type must be application/json", reply.Message);
    }

    [Fact]
    public async Task Post_JsonWithCharset_Returns202()
    {
        var reply = await PostAsync(Client, ChangesPath, Changes("[]"), "application/json; charset=utf-8");

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
    }

    [Fact]
    public async Task Post_ContentLengthAboveLimit_Returns413()
    {
        var body = Changes($$"""[{"user_ids": ["{{new string('a', 1_048_576)}}"]}]""");

        var reply = await PostAsync(Client, ChangesPath, body);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, reply.Status);
        Assert.Equal("request body is larger than 1,048,576 bytes", reply.Message);
    }

    [Fact]
    public async Task Post_ChunkedStreamAboveLimit_Returns413()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, ChangesPath)
        {
            Content = new StreamContent(new EndlessJsonStream()),
        };
        request.Content.Headers.ContentType = new("application/json");

        var reply = await SendAsync(Client, request);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, reply.Status);
        Assert.Equal("request body is larger than 1,048,576 bytes", reply.Message);
    }

    [Fact]
    public async Task Post_HugeStringUnderLimit_Returns400NotCrash()
    {
        var body = $$"""{"partner_api_key": "{{fx.PartnerApiKey}}", "client_secret": "{{fx.ClientSecret}}", "cohort_id": "{{new string('z', 1_000_000)}}", "cohort_changes": []}""";

        var reply = await PostAsync(Client, ChangesPath, body);

        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal("cohort_id must be a valid string", reply.Message);
    }

    [Fact]
    public async Task Post_SeveralProblems_AnsweredInDocumentedOrder()
    {
        var badCredentialsBadFields = ChangesBody("nope", "nope", "42", cohortId: "");
        var oversized = "{" + new string(' ', 1_048_577);

        var unsupported = await PostAsync(Client, ChangesPath, "{", "text/plain");
        var tooLarge = await PostAsync(Client, ChangesPath, oversized);
        var notObject = await PostAsync(Client, ChangesPath, "[1, 2");
        var unauthorized = await PostAsync(Client, ChangesPath, badCredentialsBadFields);
        var invalid = await PostAsync(Client, ChangesPath, Changes("42", cohortId: ""));

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, unsupported.Status);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.Status);
        Assert.Equal(HttpStatusCode.BadRequest, notObject.Status);
        Assert.Equal("request body must be a JSON object", notObject.Message);
        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.Status);
        Assert.Equal(HttpStatusCode.BadRequest, invalid.Status);
        Assert.Equal(["cohort_id must be a valid string", ChangesShape], invalid.Json.GetProperty("errors").EnumerateArray().Select(e => e.GetString()!).ToArray());
    }

    /// <summary>A 3 MiB body without Content-Length (chunked): the gateway must stop reading at the limit.</summary>
    private sealed class EndlessJsonStream : Stream
    {
        private bool _started;
        private long _left = 3 * 1024 * 1024;

        public override int Read(byte[] buffer, int offset, int count)
        {
            var span = buffer.AsSpan(offset, count);
            if (!_started)
            {
                _started = true;
                var head = "{\"cohort_id\": \""u8;
                head.CopyTo(span);
                return head.Length;
            }

            if (_left <= 0)
            {
                return 0;
            }

            var n = (int)Math.Min(count, _left);
            span[..n].Fill((byte)'a');
            _left -= n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

}
