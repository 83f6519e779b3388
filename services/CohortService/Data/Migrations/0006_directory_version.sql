-- Bumped by every directory write (upsert, identification, deletion) under the workspace row lock. A change import is
-- matched as soon as it arrives, while it waits for its turn; when it is applied, an unchanged directory_version
-- proves that the match still holds, otherwise it is matched again (no deleted user can be added that way).
ALTER TABLE workspaces ADD COLUMN directory_version bigint NOT NULL DEFAULT 0;
