-- Scheduled data jobs besides backups: restore drills (`backups.drill`) and sanitized
-- refreshes of an environment from production (`refresh`), one row per job.
CREATE TABLE data_jobs (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    job         TEXT NOT NULL,        -- drill | refresh
    schedule    TEXT NOT NULL,
    last_run    REAL NOT NULL,        -- when it last ran (or was first scheduled)
    last_result TEXT,                 -- what it gave: a backup id, "passed", rows
    last_error  TEXT,
    PRIMARY KEY (project, environment, job)
);
