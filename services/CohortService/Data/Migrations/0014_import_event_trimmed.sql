-- After Cohorts:ReplayRetention an import keeps its CohortUpdated without the user sets (MustReread) instead of losing
-- it, so a message moved back from an error queue long after still publishes its version for every subscriber. The
-- flag tells the sweeper which events it has trimmed; the partial index again holds only the rows still to trim.
-- Adding a column with a constant default rewrites nothing; the index build takes a write lock on imports.
ALTER TABLE imports ADD COLUMN event_trimmed boolean NOT NULL DEFAULT false;
DROP INDEX imports_stored_event;
CREATE INDEX imports_event_to_trim ON imports (completed_at)
    WHERE NOT event_trimmed AND (event_json IS NOT NULL OR pending_event IS NOT NULL);
