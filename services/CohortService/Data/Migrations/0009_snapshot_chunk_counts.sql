-- A snapshot's progress is kept on its chunk rows instead of being added to its import row by every chunk: up to 32
-- chunks staging at once all waited for that one row (waits of 0.5-1.1 s were logged for a 1M-identifier snapshot).
-- Each chunk records its invalid identifiers (the only outcome known before the match) with a sample of them; the
-- import status of a snapshot still staging reads the sums (snapshot_progress), and the transaction that completes or
-- fails the snapshot folds them into the import row before it removes the chunk rows.
ALTER TABLE snapshot_chunks
    ADD COLUMN invalid integer NOT NULL DEFAULT 0,
    ADD COLUMN invalid_sample text[] NOT NULL DEFAULT '{}';

CREATE VIEW snapshot_progress AS
SELECT c.import_id,
       sum(c.identifiers)::bigint AS identifiers,
       sum(c.invalid)::bigint AS invalid,
       ARRAY(SELECT v FROM snapshot_chunks x, unnest(x.invalid_sample) AS v
             WHERE x.import_id = c.import_id ORDER BY x.sequence LIMIT 20) AS invalid_sample
FROM snapshot_chunks c
GROUP BY c.import_id;
