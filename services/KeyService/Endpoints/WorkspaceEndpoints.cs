using CohortBridge.KeyService.Data;
using CohortBridge.KeyService.Keys;
using CohortBridge.ServiceDefaults;
using Microsoft.AspNetCore.Http.HttpResults;

namespace CohortBridge.KeyService.Endpoints;

public static class WorkspaceEndpoints
{
    public static IEndpointRouteBuilder MapWorkspaceEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/admin/workspaces").RequireAdminToken();
        group.MapPost("/", CreateAsync);
        return app;
    }

    private static async Task<Results<Created<WorkspaceResponse>, ProblemHttpResult>> CreateAsync(
        HttpRequest request, KeyRepository repository, TimeProvider time, ILoggerFactory loggers, CancellationToken ct)
    {
        var (body, problem) = await Problems.ReadBodyAsync<CreateWorkspaceRequest>(request, ct);
        if (problem is not null)
        {
            return problem;
        }

        if (!Identifiers.IsWorkspaceId(body!.WorkspaceId))
        {
            return Problems.BadRequest("workspace_id must match [a-z0-9][a-z0-9-]{0,62}.");
        }

        var name = body.Name ?? body.WorkspaceId!;
        if (string.IsNullOrWhiteSpace(name) || name.Length > 200 || !PostgresText.CanStore(name))
        {
            return Problems.BadRequest("name must be a non-empty string of at most 200 characters, without U+0000.");
        }

        var createdAt = time.GetUtcNow().UtcDateTime;
        if (await repository.InsertWorkspaceAsync(body.WorkspaceId!, name, createdAt, ct) == InsertOutcome.Duplicate)
        {
            return Problems.Conflict($"Workspace '{body.WorkspaceId}' already exists.");
        }

        KeyServiceLog.WorkspaceCreated(loggers.CreateLogger(typeof(WorkspaceEndpoints)), body.WorkspaceId!);
        return TypedResults.Created($"/admin/workspaces/{body.WorkspaceId}", new WorkspaceResponse(body.WorkspaceId!, name, createdAt));
    }
}
