-- The language runtimes a deployment was built and runs with ("python 3.12.1",
-- "python 3.12.1 + node 20.11.0"), shown by `tristage deployments`.
ALTER TABLE deployments ADD COLUMN runtime TEXT;
