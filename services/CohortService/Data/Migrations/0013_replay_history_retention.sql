-- Cohorts:ReplayRetention: after it, ReplayHistorySweeper clears the stored CohortUpdated of imports and the user sets
-- of change-log versions (sets_omitted, as for versions too large to log). These partial indexes hold only the rows
-- still to clear, so each sweep finds them without reading the tables, which grow by a row per request. Building
-- them takes a write lock on each table for the build.
CREATE INDEX imports_stored_event ON imports (completed_at) WHERE event_json IS NOT NULL OR pending_event IS NOT NULL;
CREATE INDEX cohort_changes_with_sets ON cohort_changes (occurred_at) WHERE NOT sets_omitted;
