-- HTTP API and dashboard: API tokens (only a sha256 of each secret is stored) and
-- dashboard sessions (only a sha256 of each session id is stored).
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,      -- public part of the token (tst_<id>_<secret>)
    name          TEXT NOT NULL UNIQUE,  -- the actor the audit log names: token:<name>
    role          TEXT NOT NULL,         -- viewer | deployer | admin
    secret_sha256 TEXT NOT NULL,         -- hex sha256 of the secret part
    created_at    REAL NOT NULL,
    created_by    TEXT NOT NULL,
    last_used_at  REAL
);

CREATE TABLE api_sessions (
    id_sha256     TEXT PRIMARY KEY,      -- hex sha256 of the session cookie value
    token_id      TEXT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL
);
CREATE INDEX api_sessions_token ON api_sessions (token_id);
