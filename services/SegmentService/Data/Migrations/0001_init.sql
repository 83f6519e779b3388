-- SegmentService: segment definitions and a persisted copy of the projections (so a restart loads them).

CREATE TABLE segments (
    segment_id   uuid        PRIMARY KEY,
    workspace_id text        NOT NULL,
    name         text        NOT NULL,
    filter       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE INDEX segments_workspace_idx ON segments (workspace_id, segment_id);

-- One row per cohort: the last applied version and its members as a serialized RoaringBitmap.
-- Replicas share this table; a write never replaces a newer version (see ProjectionRepository).
CREATE TABLE cohort_bitmaps (
    workspace_id text        NOT NULL,
    partner      text        NOT NULL,
    cohort_id    text        NOT NULL,
    version      bigint      NOT NULL,
    name         text        NOT NULL,
    archived     boolean     NOT NULL,
    member_count bigint      NOT NULL,
    bitmap       bytea       NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, partner, cohort_id)
);

-- The user directory projection (from UserDirectoryChanged and CohortService's directory export).
CREATE TABLE directory_users (
    workspace_id text    NOT NULL,
    ordinal      integer NOT NULL,
    external_id  text    NULL,
    aliases      jsonb   NOT NULL,
    device_ids   jsonb   NOT NULL,
    identified   boolean NOT NULL,
    deleted      boolean NOT NULL,
    PRIMARY KEY (workspace_id, ordinal)
);

-- Workspaces whose whole directory has been read from CohortService at least once.
CREATE TABLE directory_workspaces (
    workspace_id text        PRIMARY KEY,
    loaded_at    timestamptz NOT NULL
);
