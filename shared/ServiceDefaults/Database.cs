using System.Reflection;
using Dapper;
using DbUp;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace CohortBridge.ServiceDefaults;

public static class Database
{
    /// <summary>
    /// Registers the service's one <see cref="NpgsqlDataSource"/> (connection string <c>ConnectionStrings:{name}</c>),
    /// its readiness check, and applies the embedded migrations at start-up unless <c>Database:MigrateOnStartup</c>
    /// is false (Kubernetes runs <c>dotnet Service.dll migrate</c> in each pod's init container).
    /// </summary>
    public static IHostApplicationBuilder AddPlatformDatabase(
        this IHostApplicationBuilder builder, string name, Assembly migrationsAssembly)
    {
        DefaultTypeMap.MatchNamesWithUnderscores = true;
        var connectionString = ConnectionStringWithTimeout(builder.Configuration, name);
        builder.Services.AddNpgsqlDataSource(connectionString);
        builder.Services.AddHealthChecks().Add(new HealthCheckRegistration(
            "postgres",
            sp => new PostgresHealthCheck(sp.GetRequiredService<NpgsqlDataSource>()),
            HealthStatus.Unhealthy,
            [ServiceDefaultsExtensions.ReadyTag],
            TimeSpan.FromSeconds(3)));

        if (builder.Configuration.GetValue("Database:MigrateOnStartup", true))
        {
            builder.Services.AddHostedService(sp => new MigrationHostedService(
                connectionString, migrationsAssembly, sp.GetRequiredService<ILogger<MigrationHostedService>>()));
        }

        return builder;
    }

    /// <summary>
    /// Npgsql's default of 30 s per statement is too short for the set-based statements over millions of rows that
    /// bulk upserts and snapshot diffs run; a timeout named in the connection string itself still wins.
    /// </summary>
    public static string WithCommandTimeout(string connectionString, int seconds)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        if (!connectionString.Contains("Command Timeout", StringComparison.OrdinalIgnoreCase)
            && !connectionString.Contains("CommandTimeout", StringComparison.OrdinalIgnoreCase))
        {
            builder.CommandTimeout = seconds;
        }

        return builder.ConnectionString;
    }

    /// <summary>
    /// The connection string with <c>Database:CommandTimeoutSeconds</c> (default 300) applied: for the service's
    /// statements and for its migrations alike (an index build on a large table outlasts Npgsql's 30 s default).
    /// </summary>
    public static string ConnectionStringWithTimeout(IConfiguration configuration, string name) =>
        WithCommandTimeout(GetConnectionString(configuration, name), configuration.GetValue("Database:CommandTimeoutSeconds", 300));

    public static string GetConnectionString(IConfiguration configuration, string name) =>
        configuration.GetConnectionString(name)
        ?? throw new InvalidOperationException($"ConnectionStrings:{name} is not configured.");

    /// <summary>
    /// Creates the database if missing and applies the embedded <c>*.sql</c> migrations in name order.
    /// An advisory lock serialises replicas that start together.
    /// </summary>
    public static void Migrate(string connectionString, Assembly migrationsAssembly, ILogger logger)
    {
        try
        {
            EnsureDatabase.For.PostgresqlDatabase(connectionString, new DbUp.Engine.Output.NoOpUpgradeLog());
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DuplicateDatabase or PostgresErrorCodes.UniqueViolation)
        {
            // Another replica created it between DbUp's existence check and its CREATE DATABASE: fine.
        }

        using (var conn = new NpgsqlConnection(connectionString))
        {
            conn.Open();
            conn.Execute("SELECT pg_advisory_lock(727274)");
            try
            {
                var upgrader = DeployChanges.To.PostgresqlDatabase(connectionString)
                    .WithScriptsEmbeddedInAssembly(migrationsAssembly, s => s.EndsWith(".sql", StringComparison.Ordinal))
                    .WithTransactionPerScript()
                    .LogToNowhere()
                    .Build();
                var result = upgrader.PerformUpgrade();
                if (!result.Successful)
                {
                    throw new InvalidOperationException($"Migration {result.ErrorScript?.Name} failed.", result.Error);
                }

                foreach (var script in result.Scripts)
                {
                    MigrationLog.Applied(logger, script.Name);
                }
            }
            finally
            {
                conn.Execute("SELECT pg_advisory_unlock(727274)");
            }
        }
    }

    /// <summary>
    /// For <c>dotnet Service.dll migrate</c>: applies migrations and returns true when the process should exit.
    /// </summary>
    public static bool RunMigrationsCommand(string[] args, IConfiguration configuration, string name, Assembly assembly)
    {
        if (args.Length == 0 || args[0] != "migrate")
        {
            return false;
        }

        using var loggerFactory = LoggerFactory.Create(b => b.AddSimpleConsole());
        Migrate(ConnectionStringWithTimeout(configuration, name), assembly, loggerFactory.CreateLogger("Migrations"));
        return true;
    }

    private sealed class MigrationHostedService(string connectionString, Assembly assembly, ILogger<MigrationHostedService> logger)
        : IHostedService
    {
        // Runs before the server starts listening (hosted services start in order), so no request sees an old schema.
        public Task StartAsync(CancellationToken cancellationToken)
        {
            Migrate(connectionString, assembly, logger);
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private sealed class PostgresHealthCheck(NpgsqlDataSource dataSource) : IHealthCheck
    {
        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken)
        {
            try
            {
                await using var cmd = dataSource.CreateCommand("SELECT 1");
                await cmd.ExecuteScalarAsync(cancellationToken);
                return HealthCheckResult.Healthy();
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException or OperationCanceledException)
            {
                return HealthCheckResult.Unhealthy("PostgreSQL is not reachable.", ex);
            }
        }
    }
}

internal static partial class MigrationLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Applied migration {Script}")]
    public static partial void Applied(ILogger logger, string script);
}
