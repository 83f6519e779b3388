-- The directory version each user's identity is at least as recent as (UserDirectoryChanged.DirectoryVersion; 0 for
-- rows written before versions): an older entry arriving late, such as a replayed event, no longer overwrites a newer
-- identity or brings back a deleted user. Adding a column with a constant default rewrites no rows.
ALTER TABLE directory_users ADD COLUMN directory_version bigint NOT NULL DEFAULT 0;
