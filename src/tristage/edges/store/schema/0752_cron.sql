-- Scheduled jobs (`[environments.X.cron]`): when each entry was last looked at, and the
-- history of its runs (exit code, duration, the output redacted and capped).
CREATE TABLE cron_state (
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    command       TEXT NOT NULL,
    checked_at    REAL NOT NULL,       -- runs due up to this time were started (or skipped)
    PRIMARY KEY (project, environment, schedule, command)
);

CREATE TABLE cron_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    command       TEXT NOT NULL,
    deployment    TEXT,                -- the live deployment it ran in
    due_at        REAL NOT NULL,
    started_at    REAL,
    ended_at      REAL,
    status        TEXT NOT NULL,       -- running ok failed skipped interrupted
    exit_code     INTEGER,
    reason        TEXT,
    output        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX cron_runs_env ON cron_runs (project, environment, id);
CREATE INDEX cron_runs_running ON cron_runs (status);
