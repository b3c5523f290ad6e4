-- The login role of each PostgreSQL environment database: its generated password,
-- sealed with the secrets box (AES-256-GCM, bound to the project and environment).
CREATE TABLE data_roles (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,     -- the environment that owns the data store
    sealed      BLOB NOT NULL,     -- the role's password, encrypted
    created_at  REAL NOT NULL,
    PRIMARY KEY (project, environment)
);
