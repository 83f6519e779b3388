using System.Net;
using System.Net.Http.Json;
using CohortBridge.KeyService.Data;
using Npgsql;

namespace CohortBridge.KeyService.Tests;

/// <summary>The repository on the real database the KeyService process migrated.</summary>
public sealed class KeyRepositoryTests(KeyServiceFixture fixture) : IClassFixture<KeyServiceFixture>
{
    [Fact]
    public async Task InsertImportKey_PrefixAlreadyTaken_ReportsPrefixTakenInsteadOfThrowing()
    {
        var suffix = Guid.NewGuid().ToString("N")[..8];
        Assert.Equal(HttpStatusCode.Created, (await fixture.Admin.PostAsJsonAsync("admin/partners", new { partner = $"p{suffix}" })).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await fixture.Admin.PostAsJsonAsync("admin/workspaces", new { workspace_id = $"w{suffix}" })).StatusCode);
        await using var dataSource = NpgsqlDataSource.Create(fixture.ConnectionString);
        var repository = new KeyRepository(dataSource);
        var prefix = $"cbk_{suffix}abcd";

        var first = await repository.InsertImportKeyAsync(Guid.NewGuid(), $"w{suffix}", $"p{suffix}", prefix, new byte[32], DateTime.UtcNow, default);
        var second = await repository.InsertImportKeyAsync(Guid.NewGuid(), $"w{suffix}", $"p{suffix}", prefix, new byte[32], DateTime.UtcNow, default);

        Assert.Equal(IssueOutcome.Issued, first);
        Assert.Equal(IssueOutcome.PrefixTaken, second);
    }

    [Fact]
    public async Task InsertPartner_ApiKeyPrefixAlreadyTaken_ReportsPrefixTaken()
    {
        var suffix = Guid.NewGuid().ToString("N")[..8];
        await using var dataSource = NpgsqlDataSource.Create(fixture.ConnectionString);
        var repository = new KeyRepository(dataSource);
        var prefix = $"cbp_{suffix}abcd";

        var first = await repository.InsertPartnerAsync($"a{suffix}", "A", prefix, new byte[32], DateTime.UtcNow, default);
        var second = await repository.InsertPartnerAsync($"b{suffix}", "B", prefix, new byte[32], DateTime.UtcNow, default);

        Assert.Equal(InsertOutcome.Created, first);
        Assert.Equal(InsertOutcome.PrefixTaken, second);
    }
}
