-- A version that adds and removes more users than Cohorts:ChangeLogSetLimit keeps no added/removed sets in the change
-- log: a 10M-member snapshot wrote a 40 MB array (7.9 s inside its transaction) that no reader needs, since consumers
-- re-read the membership after a change that large anyway (CohortUpdated.MustReread). The changes endpoint reports
-- the log incomplete across such a version.
ALTER TABLE cohort_changes ADD COLUMN sets_omitted boolean NOT NULL DEFAULT false;
