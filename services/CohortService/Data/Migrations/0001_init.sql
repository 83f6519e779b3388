-- CohortService schema: the user directory, cohorts, memberships, the per-cohort change log, imports, outbox.
-- Text keys use COLLATE "C" (byte order): exact matching, faster index builds.

CREATE TABLE workspaces (
    workspace_id text COLLATE "C" PRIMARY KEY,
    -- The next user ordinal; ordinals are dense per workspace and never reused. This row is also the
    -- directory lock: directory writes take it FOR UPDATE, imports FOR SHARE.
    next_ordinal integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces (workspace_id),
    ordinal integer NOT NULL,
    external_id text COLLATE "C",
    identified boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (workspace_id, ordinal)
);

CREATE UNIQUE INDEX users_live_external_id ON users (workspace_id, external_id)
    WHERE external_id IS NOT NULL AND deleted_at IS NULL;

-- Aliases and device ids of live users only (a deletion removes them): each identifier names one user.
CREATE TABLE user_aliases (
    workspace_id text COLLATE "C" NOT NULL,
    alias_name text COLLATE "C" NOT NULL,
    alias_label text COLLATE "C" NOT NULL,
    ordinal integer NOT NULL,
    PRIMARY KEY (workspace_id, alias_name, alias_label)
);

CREATE INDEX user_aliases_owner ON user_aliases (workspace_id, ordinal);

CREATE TABLE user_devices (
    workspace_id text COLLATE "C" NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    ordinal integer NOT NULL,
    PRIMARY KEY (workspace_id, device_id)
);

CREATE INDEX user_devices_owner ON user_devices (workspace_id, ordinal);

CREATE TABLE cohorts (
    id bigserial PRIMARY KEY,
    workspace_id text COLLATE "C" NOT NULL,
    partner text COLLATE "C" NOT NULL,
    cohort_id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    partner_created_at timestamptz,
    version bigint NOT NULL DEFAULT 0,
    member_count bigint NOT NULL DEFAULT 0,
    archived boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, partner, cohort_id)
);

CREATE TABLE memberships (
    cohort_pk bigint NOT NULL REFERENCES cohorts (id),
    ordinal integer NOT NULL,
    workspace_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (cohort_pk, ordinal)
);

-- User deletion: which cohorts hold these users.
CREATE INDEX memberships_by_user ON memberships (workspace_id, ordinal);

-- One row per cohort version: what that version changed.
CREATE TABLE cohort_changes (
    cohort_pk bigint NOT NULL REFERENCES cohorts (id),
    version bigint NOT NULL,
    name text NOT NULL,
    archived boolean NOT NULL,
    added integer[] NOT NULL,
    removed integer[] NOT NULL,
    import_id uuid,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cohort_pk, version)
);

CREATE TABLE imports (
    import_id uuid PRIMARY KEY,
    workspace_id text COLLATE "C" NOT NULL,
    partner text COLLATE "C" NOT NULL,
    cohort_id text COLLATE "C" NOT NULL,
    cohort_pk bigint REFERENCES cohorts (id),
    kind text NOT NULL,
    status text NOT NULL,
    received bigint NOT NULL DEFAULT 0,
    matched bigint NOT NULL DEFAULT 0,
    added bigint NOT NULL DEFAULT 0,
    removed bigint NOT NULL DEFAULT 0,
    unmatched jsonb NOT NULL DEFAULT '{}',
    unmatched_sample text[] NOT NULL DEFAULT '{}',
    cohort_version bigint,
    accepted_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    error text,
    -- The CohortUpdated this import produced, published after commit and again on every redelivery.
    pending_event jsonb
);

CREATE INDEX imports_by_cohort ON imports (cohort_pk, started_at DESC);
CREATE INDEX imports_by_workspace ON imports (workspace_id, import_id);

-- Transactional outbox for events raised by HTTP requests and directory messages (no message to redeliver):
-- either a directory change (ordinals whose current identity is published as UserDirectoryChanged) or a ready
-- CohortUpdated. A background dispatcher publishes and deletes rows.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    workspace_id text COLLATE "C" NOT NULL,
    ordinals integer[],
    cohort_updated jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
