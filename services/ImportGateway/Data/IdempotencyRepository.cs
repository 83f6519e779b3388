using Dapper;
using Npgsql;

namespace CohortBridge.ImportGateway.Data;

/// <summary>A stored idempotency record as the gateway reads it back.</summary>
public sealed record IdempotencyRecord(
    byte[] BodyHash, Guid ImportId, string State, DateTime LeaseUntil, int? ResponseStatus, string? ResponseBody);

/// <summary>The outcome of trying to claim an Idempotency-Key.</summary>
public enum ClaimOutcome
{
    /// <summary>This request owns the key now and must publish <see cref="IdempotencyClaim.ImportId"/>.</summary>
    Claimed,

    /// <summary>The first request completed: answer its stored response.</summary>
    Completed,

    /// <summary>The key was used with another body: 409.</summary>
    BodyMismatch,

    /// <summary>Another request holds the key right now.</summary>
    InProgress,
}

/// <summary>
/// <see cref="FirstClaimedAt"/>: when the key was first claimed (set when <see cref="ClaimOutcome.Claimed"/>); every
/// publish of the import carries it as its time, whichever attempt publishes.
/// </summary>
public sealed record IdempotencyClaim(
    ClaimOutcome Outcome, Guid ImportId, int? ResponseStatus = null, string? ResponseBody = null, DateTimeOffset? FirstClaimedAt = null);

/// <summary>Idempotency records (insert-first: concurrent duplicates race on the primary key, exactly one wins).</summary>
public sealed class IdempotencyRepository(NpgsqlDataSource dataSource)
{
    /// <summary>Claims the key for a new import; a takeover keeps the import id of the record (see the SQL below).</summary>
    public Task<IdempotencyClaim> ClaimAsync(
        string workspaceId, string partner, string key, byte[] bodyHash, Guid newImportId, TimeSpan lease, CancellationToken ct) =>
        ClaimAsync(workspaceId, partner, key, bodyHash, newImportId, lease, takeOverImportId: null, ct);

    /// <summary>
    /// Claims the key for an import whose id is already in use before the claim (a streamed snapshot's chunks carry it):
    /// a <see cref="ClaimOutcome.Claimed"/> result always has <paramref name="importId"/>, also when it takes over a
    /// failed or expired claim. The record then names the import that actually gets published; the import id of the
    /// attempt taken over was never answered with 202, so no partner holds it.
    /// </summary>
    public Task<IdempotencyClaim> ClaimForImportAsync(
        string workspaceId, string partner, string key, byte[] bodyHash, Guid importId, TimeSpan lease, CancellationToken ct) =>
        ClaimAsync(workspaceId, partner, key, bodyHash, importId, lease, takeOverImportId: importId, ct);

    private async Task<IdempotencyClaim> ClaimAsync(
        string workspaceId, string partner, string key, byte[] bodyHash, Guid newImportId, TimeSpan lease, Guid? takeOverImportId,
        CancellationToken ct)
    {
        const string insert = """
            INSERT INTO idempotency_records (workspace_id, partner, idempotency_key, body_hash, import_id, state, lease_until)
            VALUES (@workspaceId, @partner, @key, @bodyHash, @newImportId, 'pending', now() + @lease)
            ON CONFLICT (workspace_id, partner, idempotency_key) DO NOTHING
            RETURNING import_id, created_at
            """;
        const string select = """
            SELECT body_hash, import_id, state, lease_until, response_status, response_body
            FROM idempotency_records
            WHERE workspace_id = @workspaceId AND partner = @partner AND idempotency_key = @key
            """;
        // A failed attempt, or a claim whose holder died (lease over), may be taken over; the import id stays unless the
        // caller's import already has its own (@takeOverImportId).
        const string takeOver = """
            UPDATE idempotency_records
            SET state = 'pending', lease_until = now() + @lease, updated_at = now(),
                import_id = COALESCE(@takeOverImportId, import_id)
            WHERE workspace_id = @workspaceId AND partner = @partner AND idempotency_key = @key
              AND body_hash = @bodyHash
              AND (state = 'failed' OR (state = 'pending' AND lease_until < now()))
            RETURNING import_id, created_at
            """;

        var args = new { workspaceId, partner, key, bodyHash, newImportId, lease, takeOverImportId };
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var inserted = await conn.QuerySingleOrDefaultAsync<ClaimedRow>(new CommandDefinition(insert, args, cancellationToken: ct));
        if (inserted is not null)
        {
            return inserted.Claim();
        }

        var record = await conn.QuerySingleOrDefaultAsync<IdempotencyRecord>(new CommandDefinition(select, args, cancellationToken: ct));
        if (record is null)
        {
            // Purged between the two statements: claim it afresh.
            return await ClaimAsync(workspaceId, partner, key, bodyHash, newImportId, lease, takeOverImportId, ct);
        }

        if (!record.BodyHash.AsSpan().SequenceEqual(bodyHash))
        {
            return new IdempotencyClaim(ClaimOutcome.BodyMismatch, record.ImportId);
        }

        if (record.State == "completed")
        {
            return new IdempotencyClaim(ClaimOutcome.Completed, record.ImportId, record.ResponseStatus, record.ResponseBody);
        }

        var taken = await conn.QuerySingleOrDefaultAsync<ClaimedRow>(new CommandDefinition(takeOver, args, cancellationToken: ct));
        return taken?.Claim() ?? new IdempotencyClaim(ClaimOutcome.InProgress, record.ImportId);
    }

    private sealed record ClaimedRow(Guid ImportId, DateTime CreatedAt)
    {
        public IdempotencyClaim Claim() =>
            new(ClaimOutcome.Claimed, ImportId, FirstClaimedAt: new DateTimeOffset(DateTime.SpecifyKind(CreatedAt, DateTimeKind.Utc)));
    }

    public async Task CompleteAsync(
        string workspaceId, string partner, string key, int status, string responseBody, CancellationToken ct)
    {
        const string sql = """
            UPDATE idempotency_records
            SET state = 'completed', response_status = @status, response_body = @responseBody, updated_at = now()
            WHERE workspace_id = @workspaceId AND partner = @partner AND idempotency_key = @key
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new { workspaceId, partner, key, status, responseBody }, cancellationToken: ct));
    }

    /// <summary>Marks a claim failed (the publish was not confirmed) so that a retry may take it over at once.</summary>
    public async Task FailAsync(string workspaceId, string partner, string key, CancellationToken ct)
    {
        const string sql = """
            UPDATE idempotency_records
            SET state = 'failed', updated_at = now()
            WHERE workspace_id = @workspaceId AND partner = @partner AND idempotency_key = @key AND state = 'pending'
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new { workspaceId, partner, key }, cancellationToken: ct));
    }

    /// <summary>
    /// <see cref="FailAsync(string, string, string, CancellationToken)"/> only while the claim is still this import's:
    /// an attempt that outlived its lease must not fail the claim of the request that took the key over.
    /// </summary>
    public async Task FailAsync(string workspaceId, string partner, string key, Guid importId, CancellationToken ct)
    {
        const string sql = """
            UPDATE idempotency_records
            SET state = 'failed', updated_at = now()
            WHERE workspace_id = @workspaceId AND partner = @partner AND idempotency_key = @key AND state = 'pending'
              AND import_id = @importId
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await conn.ExecuteAsync(new CommandDefinition(sql, new { workspaceId, partner, key, importId }, cancellationToken: ct));
    }

    /// <summary>Deletes records older than the retention (one bounded batch); returns how many.</summary>
    public async Task<int> PurgeAsync(TimeSpan retention, int batch, CancellationToken ct)
    {
        const string sql = """
            DELETE FROM idempotency_records
            WHERE ctid IN (SELECT ctid FROM idempotency_records WHERE created_at < now() - @retention LIMIT @batch)
            """;
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        return await conn.ExecuteAsync(new CommandDefinition(sql, new { retention, batch }, cancellationToken: ct));
    }
}
