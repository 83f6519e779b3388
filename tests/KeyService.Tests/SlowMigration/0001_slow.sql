-- DatabaseSettingsTests: a migration that outlasts a 1 s command timeout and fits in a longer one.
SELECT pg_sleep(2);
