-- Bulk directory upserts (issue 5: a million profiles in seconds). The foreign key users.workspace_id -> workspaces ran
-- one RI check per inserted user row, which doubled the cost of the binary COPY into users (measured: ~3.3 s vs
-- ~1.6 s backend CPU for 250,000 rows). Every write to users runs under the workspace row lock taken by
-- UserDirectory (INSERT ... ON CONFLICT DO NOTHING, then FOR UPDATE) and workspaces rows are never deleted, so the
-- constraint guarded nothing the code does not already guarantee.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_workspace_id_fkey;
