-- Delivery bodies at rest: sealed with the secrets box (AES-256-GCM, bound to the
-- delivery id), and removed after the source's `retain_days` once delivered or dead
-- (the row stays as a stub: id, times, status, event type, attempts).
-- Rows stored before this migration keep sealed = 0 until the forwarder seals them.
ALTER TABLE webhook_deliveries ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries ADD COLUMN pruned_at REAL;
CREATE INDEX webhook_deliveries_unsealed ON webhook_deliveries (sealed) WHERE sealed = 0;
CREATE INDEX webhook_deliveries_prunable
    ON webhook_deliveries (project, environment, source, received_at)
    WHERE pruned_at IS NULL AND status IN ('delivered', 'dead');
