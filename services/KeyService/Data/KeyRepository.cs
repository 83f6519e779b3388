using Dapper;
using Npgsql;

namespace CohortBridge.KeyService.Data;

public enum InsertOutcome
{
    Created,
    Duplicate,

    /// <summary>The random lookup prefix is already taken (astronomically rare): generate another key and retry.</summary>
    PrefixTaken,
}

public enum IssueOutcome
{
    Issued,
    UnknownWorkspace,
    UnknownPartner,

    /// <summary>The random lookup prefix is already taken (astronomically rare): generate another key and retry.</summary>
    PrefixTaken,
}

public sealed record ImportKeyRow(
    Guid KeyId, string WorkspaceId, string Partner, string Prefix, DateTime CreatedAt, DateTime? LastUsedAt, DateTime? InvalidatedAt);

/// <summary>What validation needs: the partner owning an API key prefix and the key owning a secret prefix.</summary>
public sealed record PartnerKeyRow(string Partner, byte[] ApiKeyHash);

public sealed record ImportKeySecretRow(Guid KeyId, string WorkspaceId, string Partner, byte[] SecretHash, DateTime? InvalidatedAt);

/// <summary>Partners, workspaces and data import keys (Dapper; secrets only as prefix + hash).</summary>
public sealed class KeyRepository(NpgsqlDataSource dataSource)
{
    public async Task<InsertOutcome> InsertPartnerAsync(
        string partner, string displayName, string apiKeyPrefix, byte[] apiKeyHash, DateTime createdAt, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO partners (partner, display_name, api_key_prefix, api_key_hash, created_at)
            VALUES (@Partner, @DisplayName, @ApiKeyPrefix, @ApiKeyHash, @CreatedAt)
            ON CONFLICT (partner) DO NOTHING
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        try
        {
            var rows = await conn.ExecuteAsync(new CommandDefinition(sql, new
            {
                Partner = partner,
                DisplayName = displayName,
                ApiKeyPrefix = apiKeyPrefix,
                ApiKeyHash = apiKeyHash,
                CreatedAt = createdAt,
            }, cancellationToken: ct));
            return rows == 1 ? InsertOutcome.Created : InsertOutcome.Duplicate;
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            // ON CONFLICT (partner) covers duplicates of the name; the only other unique key is the prefix.
            return InsertOutcome.PrefixTaken;
        }
    }

    public async Task<InsertOutcome> InsertWorkspaceAsync(string workspaceId, string name, DateTime createdAt, CancellationToken ct)
    {
        const string sql = """
            INSERT INTO workspaces (workspace_id, name, created_at)
            VALUES (@WorkspaceId, @Name, @CreatedAt)
            ON CONFLICT (workspace_id) DO NOTHING
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var rows = await conn.ExecuteAsync(new CommandDefinition(
            sql, new { WorkspaceId = workspaceId, Name = name, CreatedAt = createdAt }, cancellationToken: ct));
        return rows == 1 ? InsertOutcome.Created : InsertOutcome.Duplicate;
    }

    /// <summary>Inserts the key if both the workspace and the partner exist (one statement, no race with a delete).</summary>
    public async Task<IssueOutcome> InsertImportKeyAsync(
        Guid keyId, string workspaceId, string partner, string prefix, byte[] secretHash, DateTime createdAt, CancellationToken ct)
    {
        const string sql = """
            WITH w AS (SELECT workspace_id FROM workspaces WHERE workspace_id = @WorkspaceId),
                 p AS (SELECT partner FROM partners WHERE partner = @Partner),
                 ins AS (
                     INSERT INTO import_keys (key_id, workspace_id, partner, prefix, secret_hash, created_at)
                     SELECT @KeyId, w.workspace_id, p.partner, @Prefix, @SecretHash, @CreatedAt FROM w, p
                     RETURNING key_id)
            SELECT EXISTS (SELECT 1 FROM w) AS workspace_exists,
                   EXISTS (SELECT 1 FROM p) AS partner_exists,
                   EXISTS (SELECT 1 FROM ins) AS inserted
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        (bool WorkspaceExists, bool PartnerExists, bool Inserted) r;
        try
        {
            r = await conn.QuerySingleAsync<(bool WorkspaceExists, bool PartnerExists, bool Inserted)>(new CommandDefinition(sql, new
            {
                KeyId = keyId,
                WorkspaceId = workspaceId,
                Partner = partner,
                Prefix = prefix,
                SecretHash = secretHash,
                CreatedAt = createdAt,
            }, cancellationToken: ct));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            return IssueOutcome.PrefixTaken;
        }

        return r.Inserted ? IssueOutcome.Issued
            : !r.WorkspaceExists ? IssueOutcome.UnknownWorkspace
            : IssueOutcome.UnknownPartner;
    }

    public async Task<(bool WorkspaceExists, bool PartnerExists)> ExistsAsync(string workspaceId, string partner, CancellationToken ct)
    {
        const string sql = """
            SELECT EXISTS (SELECT 1 FROM workspaces WHERE workspace_id = @WorkspaceId),
                   EXISTS (SELECT 1 FROM partners WHERE partner = @Partner)
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleAsync<(bool, bool)>(new CommandDefinition(
            sql, new { WorkspaceId = workspaceId, Partner = partner }, cancellationToken: ct));
    }

    /// <summary>One page of keys ordered by (created_at, key_id), after the given position.</summary>
    public async Task<IReadOnlyList<ImportKeyRow>> ListImportKeysAsync(
        string workspaceId, string partner, DateTime? afterCreatedAt, Guid? afterKeyId, int limit, CancellationToken ct)
    {
        const string sql = """
            SELECT key_id, workspace_id, partner, prefix, created_at, last_used_at, invalidated_at
            FROM import_keys
            WHERE workspace_id = @WorkspaceId AND partner = @Partner
              AND (@AfterCreatedAt::timestamptz IS NULL OR (created_at, key_id) > (@AfterCreatedAt, @AfterKeyId))
            ORDER BY created_at, key_id
            LIMIT @Limit
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var rows = await conn.QueryAsync<ImportKeyRow>(new CommandDefinition(sql, new
        {
            WorkspaceId = workspaceId,
            Partner = partner,
            AfterCreatedAt = afterCreatedAt,
            AfterKeyId = afterKeyId ?? Guid.Empty,
            Limit = limit,
        }, cancellationToken: ct));
        return rows.AsList();
    }

    /// <summary>
    /// Sets invalidated_at if not yet set (an already invalidated key keeps its first time). Null when the key does
    /// not exist for this workspace and partner.
    /// </summary>
    public async Task<ImportKeyRow?> InvalidateImportKeyAsync(
        string workspaceId, string partner, Guid keyId, DateTime at, CancellationToken ct)
    {
        const string sql = """
            UPDATE import_keys
            SET invalidated_at = COALESCE(invalidated_at, @At)
            WHERE key_id = @KeyId AND workspace_id = @WorkspaceId AND partner = @Partner
            RETURNING key_id, workspace_id, partner, prefix, created_at, last_used_at, invalidated_at
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.QuerySingleOrDefaultAsync<ImportKeyRow>(new CommandDefinition(
            sql, new { KeyId = keyId, WorkspaceId = workspaceId, Partner = partner, At = at }, cancellationToken: ct));
    }

    /// <summary>The partner owning an API key prefix and the key owning a secret prefix, in one round trip.</summary>
    public async Task<(PartnerKeyRow? Partner, ImportKeySecretRow? Key)> FindForValidationAsync(
        string? apiKeyPrefix, string? secretPrefix, CancellationToken ct)
    {
        const string sql = """
            SELECT partner, api_key_hash FROM partners WHERE api_key_prefix = @ApiKeyPrefix;
            SELECT key_id, workspace_id, partner, secret_hash, invalidated_at FROM import_keys WHERE prefix = @SecretPrefix;
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var grid = await conn.QueryMultipleAsync(new CommandDefinition(
            sql, new { ApiKeyPrefix = apiKeyPrefix ?? "", SecretPrefix = secretPrefix ?? "" }, cancellationToken: ct));
        var partner = await grid.ReadSingleOrDefaultAsync<PartnerKeyRow>();
        var key = await grid.ReadSingleOrDefaultAsync<ImportKeySecretRow>();
        return (partner, key);
    }

    /// <summary>Records last use of many keys in one statement; a later time never goes backwards.</summary>
    public async Task RecordUsageAsync(Guid[] keyIds, DateTime[] usedAt, CancellationToken ct)
    {
        const string sql = """
            UPDATE import_keys k
            SET last_used_at = GREATEST(k.last_used_at, u.used_at)
            FROM unnest(@KeyIds::uuid[], @UsedAt::timestamptz[]) AS u (key_id, used_at)
            WHERE k.key_id = u.key_id
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new { KeyIds = keyIds, UsedAt = usedAt }, cancellationToken: ct));
    }
}
