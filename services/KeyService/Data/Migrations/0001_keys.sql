-- Partners, workspaces and the data import keys a workspace generates for a partner.
-- Secrets are never stored: only the non-secret lookup prefix and the SHA-256 of the whole key.

CREATE TABLE partners (
    partner          text        PRIMARY KEY,
    display_name     text        NOT NULL,
    api_key_prefix   text        NOT NULL UNIQUE,
    api_key_hash     bytea       NOT NULL,
    created_at       timestamptz NOT NULL
);

CREATE TABLE workspaces (
    workspace_id     text        PRIMARY KEY,
    name             text        NOT NULL,
    created_at       timestamptz NOT NULL
);

CREATE TABLE import_keys (
    key_id           uuid        PRIMARY KEY,
    workspace_id     text        NOT NULL REFERENCES workspaces (workspace_id),
    partner          text        NOT NULL REFERENCES partners (partner),
    prefix           text        NOT NULL UNIQUE,
    secret_hash      bytea       NOT NULL,
    created_at       timestamptz NOT NULL,
    last_used_at     timestamptz NULL,
    invalidated_at   timestamptz NULL
);

CREATE INDEX import_keys_by_workspace_partner ON import_keys (workspace_id, partner, created_at, key_id);
