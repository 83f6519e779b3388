using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using CohortBridge.Contracts;
using CohortBridge.ServiceDefaults;
using CohortBridge.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace CohortBridge.SegmentService.Tests.Support;

/// <summary>
/// A tiny real HTTP server that serves CohortService's internal projection API (brief, contract 3) from an in-memory
/// model, so the gap and catch-up paths can be driven precisely. It also records every request path.
/// </summary>
public sealed class FakeCohortService : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<(string Ws, string Partner, string CohortId), CohortModel> _cohorts = new();
    private readonly ConcurrentDictionary<(string Ws, int Ordinal), DirectoryUser> _directory = new();
    private readonly Dictionary<string, long> _directoryVersions = [];
    private readonly ConcurrentQueue<string> _requests = new();

    private FakeCohortService(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }

    public string BaseUrl => $"http://127.0.0.1:{Port}/";

    /// <summary>When true every request answers 503 (CohortService down).</summary>
    public bool Unavailable { get; set; }

    /// <summary>When set, the change log only reaches back to this version (older "after" values get complete=false).</summary>
    public long OldestChangeLogVersion { get; set; }

    /// <summary>The next directory read sends one user and then drops the connection (a restarting CohortService).</summary>
    public bool CutNextDirectoryRead { get; set; }

    /// <summary>
    /// When set, the next directory read takes its picture of the directory, sends the first user and waits for this
    /// task before sending the rest (a long read of a large workspace, overtaken by newer events).
    /// </summary>
    public Task? HoldNextDirectoryRead { get; set; }

    public IReadOnlyCollection<string> Requests => _requests.ToArray();

    public static async Task<FakeCohortService> StartAsync()
    {
        var port = ServiceProcess.FreePort();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var fake = new FakeCohortService(app, port);
        fake.Map(app);
        await app.StartAsync();
        return fake;
    }

    /// <summary>Applies one change set as CohortService would and returns the CohortUpdated it would publish.</summary>
    public CohortUpdated Change(string ws, string partner, string cohortId, string? name = null, int[]? add = null,
        int[]? remove = null, bool archive = false)
    {
        var cohort = _cohorts.GetOrAdd((ws, partner, cohortId), _ => new CohortModel { Name = cohortId });
        lock (cohort)
        {
            var added = (add ?? []).Where(o => !cohort.Members.Contains(o)).Distinct().ToArray();
            var removed = (remove ?? []).Where(cohort.Members.Contains).Distinct().ToArray();
            cohort.Members.UnionWith(added);
            cohort.Members.ExceptWith(removed);
            cohort.Name = name ?? cohort.Name;
            cohort.Archived = archive || cohort.Archived;
            cohort.Version++;
            cohort.Log.Add(new ChangeItem(cohort.Version, cohort.Name, cohort.Archived, added, removed));
            return new CohortUpdated
            {
                WorkspaceId = ws,
                Partner = partner,
                CohortId = cohortId,
                CohortName = cohort.Name,
                Version = cohort.Version,
                MemberCount = cohort.Members.Count,
                AddedCount = added.Length,
                RemovedCount = removed.Length,
                Added = added.Select(o => new CohortMemberRef { Ordinal = o }).ToList(),
                Removed = removed.Select(o => new CohortMemberRef { Ordinal = o }).ToList(),
                Archived = cohort.Archived,
                OccurredAt = DateTimeOffset.UtcNow,
            };
        }
    }

    public IReadOnlySet<int> MembersOf(string ws, string partner, string cohortId) => _cohorts[(ws, partner, cohortId)].Members.ToHashSet();

    /// <summary>
    /// Upserts users and returns the UserDirectoryChanged CohortService would publish: one directory write, so the
    /// workspace's directory version moves on by one and the event carries it.
    /// </summary>
    public UserDirectoryChanged Users(string ws, params DirectoryUser[] users)
    {
        lock (_directoryVersions)
        {
            foreach (var u in users)
            {
                _directory[(ws, u.Ordinal)] = u;
            }

            var version = _directoryVersions[ws] = _directoryVersions.GetValueOrDefault(ws) + 1;
            return new UserDirectoryChanged { WorkspaceId = ws, Users = users, DirectoryVersion = version, OccurredAt = DateTimeOffset.UtcNow };
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private void Map(WebApplication app)
    {
        app.Use(async (context, next) =>
        {
            _requests.Enqueue(context.Request.Path + context.Request.QueryString);
            if (Unavailable)
            {
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                return;
            }

            // As the real internal endpoints: SegmentService must present the service token.
            if (context.Request.Headers.Authorization.ToString() != $"Bearer {SegmentServiceHarness.ServiceToken}")
            {
                context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                return;
            }

            await next(context);
        });

        app.MapGet("/internal/workspaces", () => Results.Json(
            new { items = _cohorts.Keys.Select(k => k.Ws).Concat(_directory.Keys.Select(k => k.Ws)).Distinct().ToList() }));

        app.MapGet("/internal/cohorts", async (HttpResponse response) =>
        {
            response.ContentType = "application/x-ndjson";
            foreach (var ((ws, partner, cohortId), c) in _cohorts)
            {
                string line;
                lock (c)
                {
                    line = JsonSerializer.Serialize(new
                    {
                        workspace_id = ws, partner, cohort_id = cohortId, name = c.Name, version = c.Version,
                        archived = c.Archived, member_count = c.Members.Count,
                    });
                }

                await response.WriteAsync(line + "\n");
            }
        });

        app.MapGet("/internal/workspaces/{ws}/directory", async (string ws, HttpContext context) =>
        {
            var cut = CutNextDirectoryRead;
            CutNextDirectoryRead = false;
            var hold = HoldNextDirectoryRead;
            HoldNextDirectoryRead = null;
            context.Response.ContentType = "application/x-ndjson";
            List<DirectoryUser> users;
            lock (_directoryVersions)
            {
                // As CohortService: the version, then the users, from one state of the directory.
                context.Response.Headers["X-Directory-Version"] = _directoryVersions.GetValueOrDefault(ws).ToString(CultureInfo.InvariantCulture);
                users = [.. _directory.Where(d => d.Key.Ws == ws).Select(d => d.Value).OrderBy(u => u.Ordinal)];
            }

            foreach (var user in users)
            {
                await context.Response.WriteAsync(JsonSerializer.Serialize(user, PlatformJson.Options) + "\n");
                if (hold is not null)
                {
                    await context.Response.Body.FlushAsync();
                    await hold.WaitAsync(context.RequestAborted);
                    hold = null;
                }

                if (cut)
                {
                    // Let the client get the headers and start reading the body: the cut must fall mid-stream, past
                    // the HTTP client's own retries.
                    await context.Response.Body.FlushAsync();
                    await Task.Delay(300);
                    context.Abort();
                    return;
                }
            }
        });

        app.MapGet("/internal/workspaces/{ws}/cohorts/{partner}/{cohortId}/members", async (string ws, string partner, string cohortId, HttpResponse response) =>
        {
            if (!_cohorts.TryGetValue((ws, partner, Uri.UnescapeDataString(cohortId)), out var c))
            {
                response.StatusCode = 404;
                return;
            }

            int[] members;
            lock (c)
            {
                members = c.Members.Order().ToArray();
                response.Headers["X-Cohort-Version"] = c.Version.ToString(System.Globalization.CultureInfo.InvariantCulture);
                response.Headers["X-Cohort-Archived"] = c.Archived ? "true" : "false";
            }

            response.ContentType = "application/octet-stream";
            var bytes = new byte[members.Length * 4];
            for (var i = 0; i < members.Length; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * 4), members[i]);
            }

            await response.Body.WriteAsync(bytes);
        });

        app.MapGet("/internal/workspaces/{ws}/cohorts/{partner}/{cohortId}/changes", (string ws, string partner, string cohortId, long after) =>
        {
            if (!_cohorts.TryGetValue((ws, partner, Uri.UnescapeDataString(cohortId)), out var c))
            {
                return Results.NotFound();
            }

            lock (c)
            {
                var complete = after >= OldestChangeLogVersion - 1;
                var items = complete ? c.Log.Where(i => i.Version > after).ToList() : [];
                return Results.Json(new
                {
                    current_version = c.Version,
                    complete,
                    items = items.Select(i => new { version = i.Version, name = i.Name, archived = i.Archived, added = i.Added, removed = i.Removed }),
                });
            }
        });
    }

    private sealed class CohortModel
    {
        public string Name { get; set; } = "";
        public long Version { get; set; }
        public bool Archived { get; set; }
        public HashSet<int> Members { get; } = [];
        public List<ChangeItem> Log { get; } = [];
    }

    private sealed record ChangeItem(long Version, string Name, bool Archived, int[] Added, int[] Removed);
}
