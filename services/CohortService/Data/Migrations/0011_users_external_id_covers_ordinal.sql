-- The diff path matches external_ids by index look-ups: with the ordinal in the index, a look-up is an index-only scan
-- and never visits the users heap. At 10M users a batch of 1,000 random identifiers visited ~730 heap pages, most of
-- them outside shared buffers. The index is rebuilt under the same name with the same key and predicate (INCLUDE
-- columns are not part of the uniqueness), so it still keeps live external_ids unique. Rebuilding takes a write lock
-- on users for the build (~20 s at 10M users here).
CREATE UNIQUE INDEX users_live_external_id_covering ON users (workspace_id, external_id) INCLUDE (ordinal)
    WHERE external_id IS NOT NULL AND deleted_at IS NULL;
DROP INDEX users_live_external_id;
ALTER INDEX users_live_external_id_covering RENAME TO users_live_external_id;
