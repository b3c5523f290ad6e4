-- The databases PostgreSQL restores replaced, kept (renamed, closed to connections) so a
-- restore can be undone (`tristage db restore ENV --undo`); `backups.keep_undo` of them
-- are kept per environment, newest first. A row is written before its swap: a row whose
-- database is gone (the swap never ran) is forgotten when the copies are listed.
CREATE TABLE data_undo (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,     -- the environment that owns the data store
    database    TEXT NOT NULL,     -- the kept database, e.g. <live>_undo_1a2b3c4d
    created_at  REAL NOT NULL,
    note        TEXT NOT NULL,     -- what took its place, e.g. "restore of 20240503T020000Z-1a2b"
    PRIMARY KEY (project, environment, database)
);
