using System.Net;
using CohortBridge.ServiceDefaults;

namespace CohortBridge.ImportGateway.Status;

/// <summary>CohortService's view of an import (contract 2 of the team brief).</summary>
public sealed record CohortServiceImport
{
    public Guid ImportId { get; init; }
    public string? CohortId { get; init; }
    public string? Partner { get; init; }
    public string Status { get; init; } = "processing";
    public long Received { get; init; }
    public long Matched { get; init; }
    public long Added { get; init; }
    public long Removed { get; init; }
    public Dictionary<string, long>? Unmatched { get; init; }
    public List<string>? UnmatchedSample { get; init; }
    public long? CohortVersion { get; init; }
    public DateTimeOffset? AcceptedAt { get; init; }
    public DateTimeOffset? CompletedAt { get; init; }
    public string? Error { get; init; }
    public long? Processed { get; init; }
}

/// <summary>CohortService could not answer (down, timing out, 5xx after retries).</summary>
public sealed class CohortServiceUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Typed client for CohortService's internal import-status API (resilience from the standard handler).</summary>
public sealed class CohortServiceClient(HttpClient http)
{
    /// <summary>The import as CohortService knows it, or null when it has never seen it (404).</summary>
    public async Task<CohortServiceImport?> GetImportAsync(string workspaceId, Guid importId, CancellationToken ct)
    {
        try
        {
            using var response = await http.GetAsync(
                $"internal/workspaces/{Uri.EscapeDataString(workspaceId)}/imports/{importId:D}", ct);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return null;
            }

            if (!response.IsSuccessStatusCode)
            {
                throw new CohortServiceUnavailableException($"CohortService answered {(int)response.StatusCode}");
            }

            return await response.Content.ReadFromJsonAsync<CohortServiceImport>(PlatformJson.Options, ct)
                   ?? throw new CohortServiceUnavailableException("CohortService answered an empty body");
        }
        catch (Exception ex) when (ex is HttpRequestException or System.Text.Json.JsonException or Polly.ExecutionRejectedException
                                   || (ex is OperationCanceledException && !ct.IsCancellationRequested))
        {
            throw new CohortServiceUnavailableException("CohortService is not reachable", ex);
        }
    }
}
