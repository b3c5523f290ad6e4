-- Monitoring: request metrics sampled from the router, health probes of live
-- releases, alerts (error rate, health, automatic rollback).

-- Cumulative router counters of one deployment, written when they change (so an idle
-- platform writes nothing); kept for a bounded time by the monitor.
CREATE TABLE metric_samples (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              REAL NOT NULL,
    boot            REAL NOT NULL,             -- when the counting router started (a reset)
    project         TEXT NOT NULL,
    environment     TEXT NOT NULL,             -- the deployment's environment
    deployment      TEXT NOT NULL,
    requests        INTEGER NOT NULL,
    status_2xx      INTEGER NOT NULL,
    status_3xx      INTEGER NOT NULL,
    status_4xx      INTEGER NOT NULL,
    status_5xx      INTEGER NOT NULL,
    upstream_errors INTEGER NOT NULL,
    p50_ms          REAL,
    p99_ms          REAL
);
CREATE INDEX metric_samples_deployment ON metric_samples (deployment, at);
CREATE INDEX metric_samples_project ON metric_samples (project, environment, at);
CREATE INDEX metric_samples_at ON metric_samples (at);

-- The latest health probe of each live release.
CREATE TABLE health_probes (
    deployment      TEXT PRIMARY KEY,
    project         TEXT NOT NULL,
    environment     TEXT NOT NULL,
    at              REAL NOT NULL,
    ok              INTEGER NOT NULL,
    streak          INTEGER NOT NULL,          -- failed probes in a row
    detail          TEXT NOT NULL              -- "HTTP 200", "HTTP 500", "ConnectError"
);

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              REAL NOT NULL,
    project         TEXT NOT NULL,
    environment     TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    kind            TEXT NOT NULL,             -- error_rate | health | auto_rollback
    severity        TEXT NOT NULL,             -- warning | critical
    message         TEXT NOT NULL,
    details         TEXT NOT NULL,             -- JSON
    resolved_at     REAL,                      -- NULL while open (auto_rollback: at once)
    resolution      TEXT,
    delivery        TEXT                       -- alert_url outcome: "HTTP 200", an error, NULL
);
CREATE INDEX alerts_project ON alerts (project, id);
CREATE INDEX alerts_open ON alerts (project, environment, deployment, kind, resolved_at);
