-- Several destinations per webhook source, each with its own attempts and status; the
-- delivery's own columns then sum them up (delivered once every destination is).
CREATE TABLE webhook_destinations (
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    destination     TEXT NOT NULL,             -- its name: `app`, a URL's host:port, or `name`
    status          TEXT NOT NULL,             -- pending | failed | delivered | dead
    tries           INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_attempt_at REAL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    REAL,
    PRIMARY KEY (delivery_id, destination)
);
ALTER TABLE webhook_attempts ADD COLUMN destination TEXT;

-- Destinations that keep failing: failing since the first failure after the last 2xx;
-- paused (with an alert) once that lasts longer than the source's `pause_after`, until
-- `tristage hooks resume` or a successful send-test. No row: healthy.
CREATE TABLE webhook_endpoint_state (
    project         TEXT NOT NULL,
    environment     TEXT NOT NULL,
    source          TEXT NOT NULL,
    destination     TEXT NOT NULL,
    failing_since   REAL NOT NULL,
    paused_at       REAL,
    reason          TEXT,                      -- the last failure (status or error)
    PRIMARY KEY (project, environment, source, destination)
);

-- A send-test delivery to a paused destination goes out anyway: its 2xx resumes it.
ALTER TABLE webhook_deliveries ADD COLUMN probe INTEGER NOT NULL DEFAULT 0;

-- Filtered deliveries (their event type is not in the source's `events`) are finished
-- too: their bodies go after the retention like the others'.
DROP INDEX webhook_deliveries_prunable;
CREATE INDEX webhook_deliveries_prunable
    ON webhook_deliveries (project, environment, source, received_at)
    WHERE pruned_at IS NULL AND status IN ('delivered', 'dead', 'filtered');
