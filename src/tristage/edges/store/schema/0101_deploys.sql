-- Deploys: deployments (immutable builds), aliases (what each environment serves),
-- alias history (for rollback and keep-warm) and releases (running processes).
CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,      -- a DNS label starting with a digit (never an environment name)
    seq           INTEGER NOT NULL,      -- creation order within the platform
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    branch        TEXT NOT NULL,
    commit_sha    TEXT NOT NULL,
    message       TEXT NOT NULL DEFAULT '',
    trigger       TEXT NOT NULL,         -- push | deploy | redeploy | promote
    source        TEXT,                  -- promote: the deployment whose artifact is reused
    status        TEXT NOT NULL,         -- queued building starting ready error canceled crashed
    reason        TEXT,                  -- why it is error/canceled/crashed
    build_hash    TEXT,                  -- hash of the build-time variables it was built with
    artifact      TEXT,                  -- the immutable artifact directory
    web           TEXT,                  -- the resolved web command
    snapshot      TEXT,                  -- backup id taken before its migration
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    ready_at      REAL
);
CREATE INDEX deployments_project ON deployments (project, environment, seq);
CREATE INDEX deployments_status ON deployments (status, seq);

-- One row per (project, environment): `desired` is the intent written by deploy,
-- promote and rollback; `routed` is what the router actually serves (set by the
-- control plane once `desired` is healthy).
CREATE TABLE aliases (
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    desired       TEXT,
    routed        TEXT,
    desired_at    REAL,
    routed_at     REAL,
    PRIMARY KEY (project, environment)
);

CREATE TABLE alias_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    deployment    TEXT NOT NULL,
    at            REAL NOT NULL
);
CREATE INDEX alias_history_env ON alias_history (project, environment, id);

-- Running instances of deployments, so a restarted control plane can re-adopt them.
CREATE TABLE releases (
    deployment    TEXT PRIMARY KEY,
    pid           INTEGER NOT NULL,
    pgid          INTEGER NOT NULL,
    proc_start    TEXT NOT NULL,         -- /proc start time: a reused pid is not our process
    port          INTEGER NOT NULL,
    status        TEXT NOT NULL,         -- starting healthy draining
    restarts      INTEGER NOT NULL DEFAULT 0,
    started_at    REAL NOT NULL
);
