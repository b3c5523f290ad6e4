-- Deploys by branch: whether a deployment takes over its environment's own host (a
-- branch named exactly by the environment's patterns, or a promote) or is served at its
-- branch host only (a branch a glob caught); the object directory a push in progress
-- holds its commit in (git's quarantine, until the pre-receive hook accepts the push).
ALTER TABLE deployments ADD COLUMN takes_host INTEGER NOT NULL DEFAULT 1;
ALTER TABLE deployments ADD COLUMN objects_dir TEXT;
