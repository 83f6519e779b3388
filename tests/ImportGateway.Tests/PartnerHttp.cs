using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace CohortBridge.ImportGateway.Tests;

/// <summary>A response as a partner's connector sees it.</summary>
public sealed record Reply(HttpStatusCode Status, string Text, HttpResponseHeaders Headers)
{
    public JsonElement Json => JsonDocument.Parse(Text).RootElement;

    public string? Message => Json.TryGetProperty("message", out var m) ? m.GetString() : null;

    public Guid ImportId => Json.GetProperty("import_id").GetGuid();

    public string? RetryAfter => Headers.TryGetValues("Retry-After", out var v) ? v.Single() : null;

    public override string ToString() => $"{(int)Status} {Text}";
}

public static class PartnerHttp
{
    public const string NamePath = "partners/" + GatewayFixture.Partner + "/cohorts";
    public const string ChangesPath = "partners/" + GatewayFixture.Partner + "/cohorts/users";

    public static async Task<Reply> PostAsync(
        HttpClient client, string path, string body, string? contentType = "application/json", string? idempotencyKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path);
        request.Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        if (contentType is not null)
        {
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        }

        if (idempotencyKey is not null)
        {
            request.Headers.Add("Idempotency-Key", idempotencyKey);
        }

        return await SendAsync(client, request);
    }

    public static async Task<Reply> SendAsync(HttpClient client, HttpRequestMessage request)
    {
        using var response = await client.SendAsync(request);
        return new Reply(response.StatusCode, await response.Content.ReadAsStringAsync(), response.Headers);
    }

    /// <summary>An extension-endpoint request with header credentials.</summary>
    public static HttpRequestMessage WithCredentials(HttpMethod method, string path, string? apiKey, string? secret)
    {
        var request = new HttpRequestMessage(method, path);
        if (apiKey is not null)
        {
            request.Headers.Add("X-Partner-Api-Key", apiKey);
        }

        if (secret is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", secret);
        }

        return request;
    }

    public static string NameBody(string apiKey, string secret, string cohortId = "spring", string name = "Spring") =>
        JsonSerializer.Serialize(new
        {
            partner_api_key = apiKey,
            client_secret = secret,
            cohort_id = cohortId,
            name,
            created_at = "2026-11-22T19:20:30+01:00",
        });

    public static string ChangesBody(string apiKey, string secret, string changesJson, string cohortId = "spring") =>
        $$"""{"partner_api_key": {{JsonSerializer.Serialize(apiKey)}}, "client_secret": {{JsonSerializer.Serialize(secret)}}, "cohort_id": {{JsonSerializer.Serialize(cohortId)}}, "cohort_changes": {{changesJson}}}""";
}
