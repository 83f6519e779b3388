using System.Net;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.ImportGateway.Data;
using CohortBridge.Testing;
using Dapper;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using static CohortBridge.ImportGateway.Tests.PartnerHttp;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>Idempotency-Key, rate limit, import status, archive, snapshot routing and the OpenAPI document.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ExtensionTests(GatewayFixture fx)
{
    private string Changes(string changesJson, string cohortId = "spring") => ChangesBody(fx.PartnerApiKey, fx.ClientSecret, changesJson, cohortId);

    [Fact]
    public async Task IdempotencyKey_RetryOnOtherReplica_ReturnsFirstImportIdAndPublishesOnce()
    {
        var key = Guid.NewGuid().ToString();
        var body = Changes("""[{"user_ids": ["idem-1"]}]""");

        var first = await PostAsync(fx.Gateway.Client, ChangesPath, body, idempotencyKey: key);
        var retry = await PostAsync(fx.LimitedGateway.Client, ChangesPath, body, idempotencyKey: key);

        Assert.Equal(HttpStatusCode.Accepted, first.Status);
        Assert.Equal(HttpStatusCode.Accepted, retry.Status);
        Assert.Equal(first.ImportId, retry.ImportId);
        await AssertPublishedOnceAsync(first.ImportId);
    }

    [Fact]
    public async Task IdempotencyKey_SameKeyOtherBody_Returns409()
    {
        var key = Guid.NewGuid().ToString();
        var first = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("""[{"user_ids": ["a"]}]"""), idempotencyKey: key);

        var other = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("""[{"user_ids": ["b"]}]"""), idempotencyKey: key);

        Assert.Equal(HttpStatusCode.Accepted, first.Status);
        Assert.Equal(HttpStatusCode.Conflict, other.Status);
        Assert.Equal("Idempotency-Key was already used with a different request body", other.Message);
    }

    [Fact]
    public async Task IdempotencyKey_RetrySerializedDifferently_ReturnsFirstImportIdAndPublishesOnce()
    {
        var key = Guid.NewGuid().ToString();
        var body = Changes("""[{"user_ids": ["reserialized", "b"], "should_remove": false}]""", "idem-json");
        // The same request as another client library writes it: other key order and whitespace, escaped characters.
        var retryBody = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["cohort_changes"] = new[] { new Dictionary<string, object> { ["should_remove"] = false, ["user_ids"] = new[] { "reserialized", "b" } } },
            ["cohort_id"] = "idem-json",
            ["client_secret"] = fx.ClientSecret,
            ["partner_api_key"] = fx.PartnerApiKey,
        }, new JsonSerializerOptions { WriteIndented = true }).Replace("\"b\"", "\"\\u0062\"", StringComparison.Ordinal);
        Assert.NotEqual(body, retryBody);

        var first = await PostAsync(fx.Gateway.Client, ChangesPath, body, idempotencyKey: key);
        var retry = await PostAsync(fx.Gateway.Client, ChangesPath, retryBody, idempotencyKey: key);
        var changed = await PostAsync(fx.Gateway.Client, ChangesPath, retryBody.Replace("reserialized", "other", StringComparison.Ordinal), idempotencyKey: key);

        Assert.Equal((HttpStatusCode.Accepted, HttpStatusCode.Accepted), (first.Status, retry.Status));
        Assert.Equal(first.ImportId, retry.ImportId);
        await AssertPublishedOnceAsync(first.ImportId);
        Assert.Equal(HttpStatusCode.Conflict, changed.Status);
    }

    [Fact]
    public async Task IdempotencyKey_RetryAfterUnconfirmedPublish_PublishesAgainWithTheFirstAttemptsTime()
    {
        var key = Guid.NewGuid().ToString();
        var body = Changes("""[{"user_ids": ["republished"]}]""", "idem-time");
        var first = await PostAsync(fx.Gateway.Client, ChangesPath, body, idempotencyKey: key);
        // As if the broker had not confirmed the first publish (the partner got a 503): a retry takes the key over.
        await using (var conn = new NpgsqlConnection(fx.Infrastructure.ConnectionStringFor(fx.GatewayDatabase)))
        {
            Assert.Equal(1, await conn.ExecuteAsync("UPDATE idempotency_records SET state = 'failed' WHERE import_id = @id", new { id = first.ImportId }));
        }

        await Task.Delay(50);
        var retry = await PostAsync(fx.Gateway.Client, ChangesPath, body, idempotencyKey: key);

        Assert.Equal((HttpStatusCode.Accepted, first.ImportId), (retry.Status, retry.ImportId));
        var copies = await Eventually.UntilAsync(() => fx.WaitForPublishedAsync(first.ImportId), c => c.Count == 2,
            because: "the retry publishes the import again");
        // CohortService refuses a copy without an import row by this time (Cohorts:ImportRetention): copies must agree.
        Assert.Single(copies.Select(c => c.Message.OccurredAt).Distinct());
    }

    [Fact]
    public async Task IdempotencyKey_ConcurrentDuplicates_OneImportPublishedOnce()
    {
        var key = Guid.NewGuid().ToString();
        var body = Changes("""[{"device_ids": ["race"]}]""");

        var replies = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => PostAsync(fx.Gateway.Client, ChangesPath, body, idempotencyKey: key)));

        Assert.All(replies, r => Assert.Equal(HttpStatusCode.Accepted, r.Status));
        var importId = Assert.Single(replies.Select(r => r.ImportId).Distinct());
        await AssertPublishedOnceAsync(importId);
    }

    [Fact]
    public async Task RateLimit_BucketEmpty_Returns429WithRetryAfter()
    {
        var body = ChangesBody(fx.PartnerApiKey, fx.RateLimitedSecret, "[]");
        var replies = new List<Reply>();
        for (var i = 0; i < 4; i++)
        {
            replies.Add(await PostAsync(fx.LimitedGateway.Client, ChangesPath, body));
        }

        Assert.All(replies.Take(3), r => Assert.Equal(HttpStatusCode.Accepted, r.Status));
        Assert.Equal(HttpStatusCode.TooManyRequests, replies[3].Status);
        Assert.Equal("rate limit exceeded", replies[3].Message);
        Assert.True(int.Parse(replies[3].RetryAfter!, System.Globalization.CultureInfo.InvariantCulture) >= 1);
        Assert.DoesNotContain(fx.RateLimitedSecret, fx.LimitedGateway.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ImportStatus_NotYetPickedUp_SaysAccepted()
    {
        var posted = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]", "status-accepted"));

        var reply = await GetStatusAsync(posted.ImportId, fx.PartnerApiKey, fx.ClientSecret);

        Assert.Equal(HttpStatusCode.OK, reply.Status);
        Assert.Equal("accepted", reply.Json.GetProperty("status").GetString());
        Assert.Equal("status-accepted", reply.Json.GetProperty("cohort_id").GetString());
        Assert.Equal(0, reply.Json.GetProperty("matched").GetInt64());
        Assert.EndsWith("Z", reply.Json.GetProperty("accepted_at").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ImportStatus_KnownToCohortService_ReturnsItsStatistics()
    {
        var posted = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("""[{"user_ids": ["a", "b"]}]""", "status-done"));
        fx.CohortServiceImports[posted.ImportId] = (fx.Workspace, JsonSerializer.Serialize(new
        {
            import_id = posted.ImportId,
            cohort_id = "status-done",
            partner = GatewayFixture.Partner,
            status = "completed",
            received = 2,
            matched = 1,
            added = 1,
            removed = 0,
            unmatched = new Dictionary<string, int> { ["unknown_external_id"] = 1 },
            unmatched_sample = new[] { "b" },
            cohort_version = 3,
            accepted_at = "2026-11-22T19:20:30+01:00",
            completed_at = "2026-11-22T19:20:31+01:00",
            error = (string?)null,
        }));

        var reply = await GetStatusAsync(posted.ImportId, fx.PartnerApiKey, fx.ClientSecret);

        Assert.Equal(HttpStatusCode.OK, reply.Status);
        Assert.Equal("completed", reply.Json.GetProperty("status").GetString());
        Assert.Equal(1, reply.Json.GetProperty("unmatched").GetProperty("unknown_external_id").GetInt32());
        Assert.Equal(3, reply.Json.GetProperty("cohort_version").GetInt64());
        Assert.Equal("2026-11-22T18:20:31Z", reply.Json.GetProperty("completed_at").GetString());
    }

    [Fact]
    public async Task ImportStatus_OtherWorkspaceOrPartner_Returns404()
    {
        var posted = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]", "status-private"));

        var otherWorkspace = await GetStatusAsync(posted.ImportId, fx.PartnerApiKey, fx.OtherWorkspaceSecret);
        var otherPartner = await SendAsync(fx.Gateway.Client, WithCredentials(
            HttpMethod.Get, $"partners/{GatewayFixture.OtherPartner}/imports/{posted.ImportId}", fx.OtherPartnerApiKey, fx.OtherPartnerSecret));
        var unknown = await GetStatusAsync(Guid.NewGuid(), fx.PartnerApiKey, fx.ClientSecret);
        var notAGuid = await SendAsync(fx.Gateway.Client, WithCredentials(
            HttpMethod.Get, $"partners/{GatewayFixture.Partner}/imports/nope", fx.PartnerApiKey, fx.ClientSecret));

        Assert.Equal(HttpStatusCode.NotFound, otherWorkspace.Status);
        Assert.Equal("import not found", otherWorkspace.Message);
        Assert.Equal(HttpStatusCode.NotFound, otherPartner.Status);
        Assert.Equal(HttpStatusCode.NotFound, unknown.Status);
        Assert.Equal(HttpStatusCode.NotFound, notAGuid.Status);
    }

    [Fact]
    public async Task ImportStatus_PastImportRetention_Returns404AndIsPurged()
    {
        var expired = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]", "status-expired"), idempotencyKey: Guid.NewGuid().ToString());
        var recent = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]", "status-recent"), idempotencyKey: Guid.NewGuid().ToString());
        Assert.Equal("accepted", (await GetStatusAsync(expired.ImportId, fx.PartnerApiKey, fx.ClientSecret)).Json.GetProperty("status").GetString());
        await using var dataSource = NpgsqlDataSource.Create(fx.Infrastructure.ConnectionStringFor(fx.GatewayDatabase));
        await using (var conn = await dataSource.OpenConnectionAsync())
        {
            Assert.Equal(2, await conn.ExecuteAsync("""
                UPDATE accepted_imports SET accepted_at = accepted_at - interval '31 days' WHERE import_id = @id;
                UPDATE idempotency_records SET created_at = created_at - interval '25 hours' WHERE import_id = @id;
                """, new { id = expired.ImportId }));
        }

        // Past the retention the status is gone at once, before the purge deletes the row.
        var gone = await GetStatusAsync(expired.ImportId, fx.PartnerApiKey, fx.ClientSecret);
        Assert.Equal((HttpStatusCode.NotFound, "import not found"), (gone.Status, gone.Message));

        var purge = new RetentionPurgeService(new IdempotencyRepository(dataSource), new ImportRegisterRepository(dataSource),
            Options.Create(new GatewayOptions()), NullLogger<RetentionPurgeService>.Instance);
        Assert.Equal((1, 1), await purge.PurgeOnceAsync(CancellationToken.None));
        Assert.Equal((0, 0), await purge.PurgeOnceAsync(CancellationToken.None));

        await using (var conn = await dataSource.OpenConnectionAsync())
        {
            Assert.Equal([recent.ImportId], await conn.QueryAsync<Guid>(
                "SELECT import_id FROM accepted_imports WHERE import_id = ANY(@ids)", new { ids = new[] { expired.ImportId, recent.ImportId } }));
            Assert.Equal([recent.ImportId], await conn.QueryAsync<Guid>(
                "SELECT import_id FROM idempotency_records WHERE import_id = ANY(@ids)", new { ids = new[] { expired.ImportId, recent.ImportId } }));
        }

        Assert.Equal("accepted", (await GetStatusAsync(recent.ImportId, fx.PartnerApiKey, fx.ClientSecret)).Json.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Gateway_OutsideDevelopmentWithTheServiceTokenOnly_AcceptsImports()
    {
        // The internet-facing gateway has no admin API, so it is not given the admin token.
        await using var gateway = await fx.StartGatewayAsync(new Dictionary<string, string>
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["PLATFORM_ADMIN_TOKEN"] = "",
        });

        var reply = await PostAsync(gateway.Client, ChangesPath, Changes("""[{"user_ids": ["no-admin"]}]""", "service-token-only"));

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        await fx.WaitForPublishedAsync(reply.ImportId);
    }

    [Fact]
    public async Task QuorumQueues_On_GatewayReadyWithItsKeyInvalidationQueueQuorum()
    {
        // The per-replica key-invalidation queue is temporary: as a quorum queue it cannot auto-delete, so it keeps
        // MassTransit's expiry (x-expires) instead and still goes away after the replica does.
        await using var gateway = await fx.StartGatewayAsync(new Dictionary<string, string> { ["RabbitMq__QuorumQueues"] = "true" });

        // A queue just declared may not list its type and consumers yet.
        var queue = await Eventually.UntilAsync(
            async () => (await fx.Infrastructure.QueuesAsync(fx.VirtualHost)).FirstOrDefault(q =>
                q.GetProperty("name").GetString()!.StartsWith("gateway-key-invalidated-", StringComparison.Ordinal)
                && q.TryGetProperty("type", out var type) && type.GetString() == "quorum"
                && q.TryGetProperty("consumers", out var consumers) && consumers.GetInt32() == 1),
            q => q.ValueKind == JsonValueKind.Object, TimeSpan.FromSeconds(60), "the replica's quorum key-invalidation queue has its consumer");

        Assert.True(queue.GetProperty("arguments").TryGetProperty("x-expires", out _), queue.ToString());
    }

    [Fact]
    public async Task ManagementPort_Set_HealthAndMetricsOnlyThere()
    {
        // The gateway faces the internet; its metrics name the database host and user and the internal services.
        var management = ServiceProcess.FreePort();
        var managementAddress = new Uri($"http://127.0.0.1:{management}/");
        await using var gateway = await fx.StartGatewayAsync(
            new Dictionary<string, string> { ["Management__Port"] = management.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            waitUntilReady: false);
        await gateway.WaitUntilReadyAsync(TimeSpan.FromSeconds(120), managementAddress);
        using var operations = new HttpClient { BaseAddress = managementAddress };

        var metrics = await operations.GetAsync("metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        Assert.Contains("service_name=\"ImportGateway\"", await metrics.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await operations.GetAsync("health/live")).StatusCode);
        foreach (var path in new[] { "metrics", "health/live", "health/ready" })
        {
            Assert.Equal(HttpStatusCode.NotFound, (await gateway.Client.GetAsync(path)).StatusCode);
            // The split follows the port the connection came in on, not the Host header the client chose.
            using var spoofed = new HttpRequestMessage(HttpMethod.Get, path);
            spoofed.Headers.Host = $"127.0.0.1:{management}";
            Assert.Equal(HttpStatusCode.NotFound, (await gateway.Client.SendAsync(spoofed)).StatusCode);
        }

        // Partners keep the public port; the management port serves nothing else.
        var reply = await PostAsync(gateway.Client, ChangesPath, Changes("""[{"user_ids": ["mgmt"]}]""", "management-port"));
        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var onManagement = await PostAsync(operations, ChangesPath, Changes("""[{"user_ids": ["mgmt"]}]""", "management-port"));
        Assert.Equal(HttpStatusCode.NotFound, onManagement.Status);
    }

    [Fact]
    public async Task ImportStatus_BadCredentials_Returns401()
    {
        var noSecret = await GetStatusAsync(Guid.NewGuid(), fx.PartnerApiKey, null);
        var badKey = await GetStatusAsync(Guid.NewGuid(), "nope", fx.ClientSecret);

        Assert.Equal(HttpStatusCode.Unauthorized, noSecret.Status);
        Assert.Equal("Invalid client secret", noSecret.Message);
        Assert.Equal(HttpStatusCode.Unauthorized, badKey.Status);
        Assert.Equal("Invalid Partner API key", badKey.Message);
    }

    [Fact]
    public async Task ArchiveCohort_IdWithSlash_PublishesArchive()
    {
        using var request = WithCredentials(HttpMethod.Delete, $"partners/{GatewayFixture.Partner}/cohorts/a%2Fb%20c", fx.PartnerApiKey, fx.ClientSecret);

        var reply = await SendAsync(fx.Gateway.Client, request);

        Assert.Equal(HttpStatusCode.Accepted, reply.Status);
        var (_, message) = Assert.Single(await fx.WaitForPublishedAsync(reply.ImportId));
        Assert.Equal(CohortExportKind.Archive, message.Kind);
        Assert.True(message.Archive);
        Assert.Equal("a/b c", message.CohortId);
    }

    [Fact]
    public async Task ArchiveCohort_RawTargetShapes_ActOnTheRoutedCohortOrAre400()
    {
        // The cohort id is read from the raw request target (for %2F); Kestrel routes on the normalized path. The two
        // must never disagree: "x/../y" routes to y, and an absolute-form target starts with the scheme.
        var id = Guid.NewGuid().ToString("N")[..8];
        var port = fx.Gateway.BaseAddress.Port;
        string[] refused =
        [
            $"/partners/{GatewayFixture.Partner}/cohorts/dot-{id}/../target-{id}",
            $"/partners/{GatewayFixture.Partner}/cohorts/dot-{id}/%2E%2E/target-{id}",
            $"/partners/{GatewayFixture.Partner}/cohorts/./target-{id}",
        ];
        foreach (var target in refused)
        {
            var (status, body) = await RawDeleteAsync(port, target);
            Assert.Equal((target, 400, """{"message":"cohort_id must be a valid string"}"""), (target, status, body));
        }

        var accepted = new List<Guid>();
        foreach (var (target, cohortId) in new[]
        {
            ($"http://127.0.0.1:{port}/partners/{GatewayFixture.Partner}/cohorts/abs-{id}", $"abs-{id}"),
            ($"/partners/{GatewayFixture.Partner}/cohorts/slash-{id}/", $"slash-{id}"),
        })
        {
            var (status, body) = await RawDeleteAsync(port, target);
            Assert.Equal((target, 202), (target, status));
            var importId = JsonDocument.Parse(body).RootElement.GetProperty("import_id").GetGuid();
            Assert.Equal(cohortId, Assert.Single(await fx.WaitForPublishedAsync(importId)).Message.CohortId);
            accepted.Add(importId);
        }

        // A refused request publishes nothing (and publishing comes before any answer).
        Assert.DoesNotContain(fx.Published.Values.SelectMany(b => b), m => m.Message.CohortId.Contains(id, StringComparison.Ordinal) && !accepted.Contains(m.Message.ImportId));
    }

    /// <summary>A DELETE with this exact request target over a bare connection (HttpClient normalizes dot segments); HTTP/1.0, so the body is not chunked.</summary>
    private async Task<(int Status, string Body)> RawDeleteAsync(int port, string target)
    {
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        await using var stream = tcp.GetStream();
        var request = $"DELETE {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nX-Partner-Api-Key: {fx.PartnerApiKey}\r\n"
                      + $"Authorization: Bearer {fx.ClientSecret}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(request));
        using var reader = new StreamReader(stream);
        var response = await reader.ReadToEndAsync();
        var status = int.Parse(response.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var body = response[(response.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
        return (status, body);
    }

    [Fact]
    public async Task Sequence_RequestsForOneCohort_NumberedInAcceptOrderAcrossReplicas()
    {
        var cohort = "seq-" + Guid.NewGuid().ToString("N")[..8];
        var accepted = new List<Guid>();
        foreach (var client in new[] { fx.Gateway.Client, fx.LimitedGateway.Client, fx.Gateway.Client })
        {
            var reply = await PostAsync(client, ChangesPath, Changes("""[{"user_ids": ["s1"]}]""", cohort));
            Assert.Equal(HttpStatusCode.Accepted, reply.Status);
            accepted.Add(reply.ImportId);
        }

        var name = await PostAsync(fx.Gateway.Client, NamePath, NameBody(fx.PartnerApiKey, fx.ClientSecret, cohort, "Seq"));
        Assert.Equal(HttpStatusCode.Accepted, name.Status);
        accepted.Add(name.ImportId);

        var sequences = new List<long?>();
        foreach (var importId in accepted)
        {
            sequences.Add(Assert.Single(await fx.WaitForPublishedAsync(importId)).Message.Sequence);
        }

        Assert.Equal([1L, 2, 3, 4], sequences);

        // A credentials check changes no cohort and takes no place in its order.
        var check = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]", cohort));
        Assert.Equal(HttpStatusCode.Accepted, check.Status);
        Assert.Null(Assert.Single(await fx.WaitForPublishedAsync(check.ImportId)).Message.Sequence);
    }

    [Fact]
    public async Task ArchiveCohort_InvalidSecret_Returns401()
    {
        using var request = WithCredentials(HttpMethod.Delete, $"partners/{GatewayFixture.Partner}/cohorts/x", fx.PartnerApiKey, "bad");

        var reply = await SendAsync(fx.Gateway.Client, request);

        Assert.Equal(HttpStatusCode.Unauthorized, reply.Status);
        Assert.Equal("Invalid client secret", reply.Message);
    }

    [Theory]
    [InlineData("application/json", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("application/x-ndjson", HttpStatusCode.BadRequest)]
    [InlineData("text/csv", HttpStatusCode.Accepted)]
    public async Task PutMembers_ContentTypes_CheckedBeforeThePipeline(string contentType, HttpStatusCode expected)
    {
        using var request = WithCredentials(HttpMethod.Put, $"partners/{GatewayFixture.Partner}/cohorts/snap/members", fx.PartnerApiKey, fx.ClientSecret);
        request.Content = new StringContent("external_id\nu1\n");
        request.Content.Headers.ContentType = new(contentType);

        var reply = await SendAsync(fx.Gateway.Client, request);

        Assert.Equal(expected, reply.Status);
    }

    [Fact]
    public async Task PutMembers_InvalidSecret_Returns401()
    {
        using var request = WithCredentials(HttpMethod.Put, $"partners/{GatewayFixture.Partner}/cohorts/snap/members", fx.PartnerApiKey, "bad");
        request.Content = new StringContent("{\"external_id\": \"u1\"}\n");
        request.Content.Headers.ContentType = new("application/x-ndjson");

        var reply = await SendAsync(fx.Gateway.Client, request);

        Assert.Equal(HttpStatusCode.Unauthorized, reply.Status);
    }

    [Fact]
    public async Task OpenApi_Document_DescribesPartnerEndpointsWithExamples()
    {
        var json = await fx.Gateway.Client.GetStringAsync("openapi/v1.json");
        var doc = JsonDocument.Parse(json).RootElement;

        var paths = doc.GetProperty("paths");
        Assert.True(paths.TryGetProperty("/partners/{partner}/cohorts", out _));
        Assert.True(paths.TryGetProperty("/partners/{partner}/cohorts/users", out var users));
        Assert.True(paths.TryGetProperty("/partners/{partner}/imports/{import_id}", out _));
        Assert.Contains("\"cohort_changes\"", users.GetRawText(), StringComparison.Ordinal);
        Assert.Contains("Only 1,000 user_ids, device_ids, and aliases are allowed per request", json, StringComparison.Ordinal);
        Assert.Contains("spring-buyers", json, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Logs_AfterRequests_NeverContainSecrets()
    {
        await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]"));

        Assert.DoesNotContain(fx.ClientSecret, fx.Gateway.Output, StringComparison.Ordinal);
        Assert.DoesNotContain(fx.PartnerApiKey, fx.Gateway.Output, StringComparison.Ordinal);
    }

    private Task<Reply> GetStatusAsync(Guid importId, string? apiKey, string? secret) =>
        SendAsync(fx.Gateway.Client, WithCredentials(HttpMethod.Get, $"partners/{GatewayFixture.Partner}/imports/{importId}", apiKey, secret));

    /// <summary>Publishes a sentinel after the import and waits for it: the recorder has then seen every copy there is.</summary>
    private async Task AssertPublishedOnceAsync(Guid importId)
    {
        await fx.WaitForPublishedAsync(importId);
        var sentinel = await PostAsync(fx.Gateway.Client, ChangesPath, Changes("[]", "sentinel"));
        await fx.WaitForPublishedAsync(sentinel.ImportId);
        await Eventually.UntilAsync(() => Task.FromResult(fx.Published.ContainsKey(sentinel.ImportId)));
        Assert.Single(fx.Published[importId]);
    }
}
