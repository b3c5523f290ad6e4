-- How a release last ended before the supervisor restarted it (e.g. "killed: out of
-- memory (limit 1G)"), shown by `tristage status` next to its health.
ALTER TABLE releases ADD COLUMN last_exit TEXT;
