-- The workspace size (next_ordinal) when the directory tables were last analyzed for it: a workspace that has doubled
-- since (by 10,000 users or more) gets the tables analyzed, however small it is next to the others (UserDirectory).
ALTER TABLE workspaces ADD COLUMN analyzed_users integer NOT NULL DEFAULT 0;
