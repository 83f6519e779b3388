using System.Globalization;
using CohortBridge.ServiceDefaults;
using CohortBridge.Testing;
using Dapper;
using Microsoft.Extensions.Configuration;
using Npgsql;

namespace CohortBridge.KeyService.Tests;

/// <summary>The shared data-source settings every service gets from ServiceDefaults.</summary>
public sealed class DatabaseSettingsTests
{
    [Fact]
    public void WithCommandTimeout_NotInConnectionString_UsesPlatformDefault()
    {
        var cs = Database.WithCommandTimeout("Host=db;Username=postgres;Database=keys", 300);
        Assert.Equal(300, new NpgsqlConnectionStringBuilder(cs).CommandTimeout);
    }

    [Theory]
    [InlineData("Host=db;Command Timeout=45")]
    [InlineData("Host=db;CommandTimeout=45")]
    public void WithCommandTimeout_SetInConnectionString_KeepsIt(string connectionString)
    {
        var cs = Database.WithCommandTimeout(connectionString, 300);
        Assert.Equal(45, new NpgsqlConnectionStringBuilder(cs).CommandTimeout);
    }

    [Fact]
    public async Task MigrateCommand_FollowsTheCommandTimeout()
    {
        // Migrations used to get Npgsql's 30 s default whatever the setting, so a long index build failed the upgrade.
        var infrastructure = await Infrastructure.GetAsync();
        var database = Infrastructure.UniqueName("slowmig");
        IConfiguration Settings(int seconds) => new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Slow"] = infrastructure.ConnectionStringFor(database),
            ["Database:CommandTimeoutSeconds"] = seconds.ToString(CultureInfo.InvariantCulture),
        }).Build();
        var assembly = typeof(DatabaseSettingsTests).Assembly;

        var timedOut = Assert.Throws<InvalidOperationException>(() => Database.RunMigrationsCommand(["migrate"], Settings(1), "Slow", assembly));
        Assert.Contains("0001_slow.sql", timedOut.Message, StringComparison.Ordinal);
        Assert.True(Database.RunMigrationsCommand(["migrate"], Settings(30), "Slow", assembly));

        await using var conn = new NpgsqlConnection(infrastructure.ConnectionStringFor(database));
        Assert.Equal(["CohortBridge.KeyService.Tests.SlowMigration.0001_slow.sql"], await conn.QueryAsync<string>("SELECT scriptname FROM schemaversions"));
    }
}
