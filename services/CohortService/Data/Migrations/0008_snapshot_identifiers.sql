-- Snapshots stage their identifiers as sent (kind, value, label) and match them all at once when complete, instead of
-- matching each chunk as it arrives (issue "Large cohorts"): chunks no longer have a matched count.
-- Snapshots still staging at upgrade time have staging tables of the old shape (matched ordinals): they fail, as a
-- snapshot that breaks off does (nothing applied, staging dropped, their turn in the cohort's order done), and the
-- partner sends them again.
DO $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT import_id, staging_table FROM snapshots WHERE state = 'staging' LOOP
        UPDATE imports SET status = 'failed', completed_at = now(),
            error = 'CohortService was upgraded while this snapshot was staging; send the snapshot again'
        WHERE import_id = s.import_id AND status = 'processing';
        UPDATE snapshots SET state = 'failed', finished_at = now() WHERE import_id = s.import_id;
        INSERT INTO cohort_sequences (workspace_id, partner, cohort_id, applied)
        SELECT workspace_id, partner, cohort_id, sequence FROM snapshots WHERE import_id = s.import_id AND sequence IS NOT NULL
        ON CONFLICT (workspace_id, partner, cohort_id) DO UPDATE SET applied = GREATEST(cohort_sequences.applied, excluded.applied);
        DELETE FROM snapshot_chunks WHERE import_id = s.import_id;
        EXECUTE format('DROP TABLE IF EXISTS %I', s.staging_table);
    END LOOP;
END
$$;

ALTER TABLE snapshot_chunks DROP COLUMN matched;
