-- Variables and secrets per environment. A secret's value is never stored in the
-- clear: `sealed` holds its AES-GCM ciphertext, bound to the variable's identity
-- (project, scope, branch, name) so a ciphertext moved to another row fails to open.
CREATE TABLE variables (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    scope       TEXT NOT NULL,              -- an environment name, or '*' for all
    branch      TEXT NOT NULL DEFAULT '',   -- '' = every branch of the scope
    name        TEXT NOT NULL,
    secret      INTEGER NOT NULL DEFAULT 0,
    build       INTEGER NOT NULL DEFAULT 0, -- reaches the build step
    value       TEXT,                       -- plain values only
    sealed      BLOB,                       -- secrets only
    set_at      REAL NOT NULL,              -- when the value last changed (rotation)
    updated_at  REAL NOT NULL,
    set_by      TEXT NOT NULL DEFAULT '',
    UNIQUE (project, scope, branch, name),
    CHECK ((secret = 1 AND value IS NULL AND sealed IS NOT NULL)
        OR (secret = 0 AND sealed IS NULL AND value IS NOT NULL))
);
CREATE INDEX variables_project ON variables (project, scope);
