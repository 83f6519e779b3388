-- Gateway:ImportRetention: the purge deletes accepted imports by age, batch after batch, through this index. Building it
-- takes a write lock on accepted_imports for the build.
CREATE INDEX accepted_imports_accepted_at ON accepted_imports (accepted_at);
