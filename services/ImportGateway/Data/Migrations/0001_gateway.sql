-- Idempotency records: one per (workspace, partner, Idempotency-Key). The import id is fixed when the key is first
-- claimed, so every retry publishes the same message id and CohortService applies it once.
CREATE TABLE idempotency_records (
    workspace_id    text        NOT NULL,
    partner         text        NOT NULL,
    idempotency_key text        NOT NULL,
    body_hash       bytea       NOT NULL,
    import_id       uuid        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'completed', 'failed')),
    lease_until     timestamptz NOT NULL,
    response_status integer,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, partner, idempotency_key)
);

CREATE INDEX idempotency_records_created_at ON idempotency_records (created_at);

-- The register of accepted imports: who may read an import's status, and what to say before CohortService has it.
CREATE TABLE accepted_imports (
    import_id    uuid        PRIMARY KEY,
    workspace_id text        NOT NULL,
    partner      text        NOT NULL,
    cohort_id    text        NOT NULL,
    kind         text        NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT now()
);
