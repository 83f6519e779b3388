-- Cohorts:ImportRetention: after it, ReplayHistorySweeper deletes finished imports and the change-log entries whose
-- sets it has already cleared. Both indexes are partial, so an entry is added only when a row becomes deletable later
-- (an import when it finishes; a version when its sets are cleared), not on every write of the import path. Building
-- them takes a write lock on each table for the build.
CREATE INDEX imports_finished ON imports (accepted_at) WHERE status <> 'processing';
CREATE INDEX cohort_changes_sets_cleared ON cohort_changes (occurred_at) WHERE sets_omitted;

-- Imports accepted before deleted_before may have been deleted: a message that old without an import row is refused,
-- since whether it was applied cannot be told. Stored, not derived from the configured retention, so that raising or
-- switching off the retention (or replicas configured apart during a rollout) cannot make a deleted import new again.
-- Only moves forward; the sweeper commits it before deleting up to it.
CREATE TABLE import_deletion_horizon (
    single boolean PRIMARY KEY DEFAULT true CHECK (single),
    deleted_before timestamptz NOT NULL
);
INSERT INTO import_deletion_horizon (deleted_before) VALUES ('-infinity');
