using CohortBridge.ServiceDefaults;
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
}
