-- Per-cohort request order (CohortExportReceived.Sequence). The gateway takes the next number just before publishing;
-- CohortService applies a cohort's imports in this order. One small row per cohort a partner ever wrote to.
CREATE TABLE cohort_sequences (
    workspace_id text COLLATE "C" NOT NULL,
    partner      text COLLATE "C" NOT NULL,
    cohort_id    text COLLATE "C" NOT NULL,
    last_value   bigint NOT NULL,
    PRIMARY KEY (workspace_id, partner, cohort_id)
);
