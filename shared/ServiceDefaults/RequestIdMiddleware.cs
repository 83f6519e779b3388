using System.Diagnostics;
using Microsoft.AspNetCore.Http;

namespace CohortBridge.ServiceDefaults;

/// <summary>Echoes the client's X-Request-Id (or makes one) on every response and tags the current trace with it.</summary>
public sealed class RequestIdMiddleware(RequestDelegate next)
{
    public const string HeaderName = "X-Request-Id";

    public Task InvokeAsync(HttpContext context)
    {
        var requestId = context.Request.Headers[HeaderName].ToString();
        if (string.IsNullOrWhiteSpace(requestId) || requestId.Length > 200)
        {
            requestId = Activity.Current?.TraceId.ToString() ?? Guid.NewGuid().ToString("N");
        }

        context.TraceIdentifier = requestId;
        Activity.Current?.SetTag("http.request_id", requestId);
        context.Response.OnStarting(() =>
        {
            context.Response.Headers[HeaderName] = requestId;
            return Task.CompletedTask;
        });
        return next(context);
    }
}
