-- Webhook deliveries: stored (verified) before the provider gets its 2xx, forwarded
-- to the environment's live release with retries, dead-lettered after the schedule.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,          -- whd_<hex>, sent to the app as X-Tristage-Delivery
    project         TEXT NOT NULL,
    environment     TEXT NOT NULL,
    source          TEXT NOT NULL,             -- the source name in tristage.toml
    kind            TEXT NOT NULL,             -- clerk | stripe | standard
    message_id      TEXT NOT NULL,             -- svix-id, webhook-id or the Stripe event id
    event_type      TEXT,
    received_at     REAL NOT NULL,
    headers         TEXT NOT NULL,             -- JSON: the signature and content headers forwarded
    body            BLOB NOT NULL,             -- the original body, byte for byte
    size            INTEGER NOT NULL,
    path            TEXT NOT NULL,             -- the app path at receipt (the current config wins)
    status          TEXT NOT NULL,             -- pending | failed | delivered | dead
    tries           INTEGER NOT NULL DEFAULT 0, -- attempts since queued (a replay resets it)
    attempts        INTEGER NOT NULL DEFAULT 0, -- attempts ever made
    next_attempt_at REAL,                      -- while waiting; also the claim lease of a forwarder
    last_attempt_at REAL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    REAL,
    duplicates      INTEGER NOT NULL DEFAULT 0, -- the same message id received again
    UNIQUE (project, environment, source, message_id)
);
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (status, project, environment, next_attempt_at);
CREATE INDEX webhook_deliveries_env
    ON webhook_deliveries (project, environment, received_at);

CREATE TABLE webhook_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at           REAL NOT NULL,
    url          TEXT NOT NULL,
    status_code  INTEGER,                      -- NULL: no HTTP answer (refused, timeout)
    duration_ms  REAL NOT NULL,
    error        TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- Requests refused at ingest (forged, expired, malformed, oversized, no secret): counted,
-- never stored.
CREATE TABLE webhook_rejections (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    count       INTEGER NOT NULL DEFAULT 0,
    last_at     REAL NOT NULL,
    PRIMARY KEY (project, environment, source, reason)
);
