-- Process types and replicas: a deployment's release is several processes (`web.1`,
-- `web.2`, `worker.1`, ...), each with its own runtime handle; `port` is 0 for a
-- process without one (every type but web).
CREATE TABLE releases_new (
    deployment    TEXT NOT NULL,
    process       TEXT NOT NULL DEFAULT 'web.1',   -- TYPE.N
    handle        TEXT NOT NULL,
    port          INTEGER NOT NULL,
    status        TEXT NOT NULL,                   -- starting healthy restarting draining
    restarts      INTEGER NOT NULL DEFAULT 0,
    started_at    REAL NOT NULL,
    last_exit     TEXT,
    PRIMARY KEY (deployment, process)
);
INSERT INTO releases_new (deployment, process, handle, port, status, restarts, started_at,
                          last_exit)
    SELECT deployment, 'web.1', handle, port, status, restarts, started_at, last_exit
    FROM releases;
DROP TABLE releases;
ALTER TABLE releases_new RENAME TO releases;

-- `tristage scale web=3 --env production`: replica counts set at run time, over the
-- `processes` of tristage.toml, for every deployment of the environment.
CREATE TABLE process_scale (
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    process       TEXT NOT NULL,                   -- a process type (web, worker, ...)
    count         INTEGER NOT NULL,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (project, environment, process)
);
