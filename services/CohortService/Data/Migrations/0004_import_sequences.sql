-- Per-cohort request order (CohortExportReceived.Sequence, assigned by the gateway). An import with sequence s is
-- applied once s - 1 is: whichever order the broker delivers in, a cohort's requests apply in the order they came.
-- Keyed like the gateway's counter, not by cohorts.id: a sequence may belong to a request that creates no cohort row.
CREATE TABLE cohort_sequences (
    workspace_id text COLLATE "C" NOT NULL,
    partner text COLLATE "C" NOT NULL,
    cohort_id text COLLATE "C" NOT NULL,
    applied bigint NOT NULL,
    PRIMARY KEY (workspace_id, partner, cohort_id)
);

-- The sequence of a snapshot (carried by its last chunk): whichever chunk completes the set applies it in turn.
ALTER TABLE snapshots ADD COLUMN sequence bigint;
