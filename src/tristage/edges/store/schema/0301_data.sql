-- Data stores: the backup catalog (a cache of what the backup target holds, with
-- metadata) and the backup scheduler's last runs.
CREATE TABLE data_backups (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,     -- the environment that owns the data store
    id          TEXT NOT NULL,     -- e.g. 20240503T020000Z-1a2b
    kind        TEXT NOT NULL,     -- manual | scheduled | pre-migration | safety
    created_at  REAL NOT NULL,
    size        INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    tables      INTEGER NOT NULL,
    encrypted   INTEGER NOT NULL DEFAULT 0,
    note        TEXT,              -- deployment id for pre-migration snapshots
    PRIMARY KEY (project, environment, id)
);

CREATE TABLE data_backup_schedule (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    schedule    TEXT NOT NULL,
    last_run    REAL NOT NULL,     -- when the scheduler last considered a run done
    last_backup TEXT,
    last_error  TEXT,
    PRIMARY KEY (project, environment)
);
