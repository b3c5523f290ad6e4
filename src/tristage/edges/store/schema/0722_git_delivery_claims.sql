-- A git host delivery is claimed by the process that acts on it (the router process
-- answers deliveries and may outlive the control plane, which resumes what was left):
-- a claim older than the lease is taken over, so a delivery is acted on once.
ALTER TABLE git_deliveries ADD COLUMN claimed_at REAL;
