-- Core tables: projects and the audit log. Each area adds its own files:
-- 01xx deploys, 02xx variables, 03xx data, 04xx webhooks, 05xx monitor.
CREATE TABLE projects (
    name        TEXT PRIMARY KEY,
    root        TEXT,              -- the registered working copy
    config      TEXT NOT NULL,     -- the last validated tristage.toml text
    key_salt    BLOB,              -- per-project salt for deterministic sanitization
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,     -- e.g. project.init, deploy.create, alias.switch, env.set
    project     TEXT,
    environment TEXT,
    target      TEXT,              -- deployment id, variable name, backup id...
    details     TEXT NOT NULL DEFAULT '{}'   -- JSON, never a secret value
);
CREATE INDEX audit_events_project ON audit_events (project, environment, at);
