-- Cohorts:ImportRetention: after it, ReplayHistorySweeper deletes finished imports and the change-log entries whose
-- sets it has already cleared. Both indexes are partial, so an entry is added only when a row becomes deletable later
-- (an import when it finishes; a version when its sets are cleared), not on every write of the import path. Building
-- them takes a write lock on each table for the build.
CREATE INDEX imports_finished ON imports (accepted_at) WHERE status <> 'processing';
CREATE INDEX cohort_changes_sets_cleared ON cohort_changes (occurred_at) WHERE sets_omitted;
