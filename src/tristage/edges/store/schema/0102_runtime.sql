-- Releases run in a Runtime: what identifies a running release is the runtime's
-- handle (opaque JSON: a sandboxed process group, a container, a pod), not pid
-- columns. Releases of earlier versions are carried over as unsandboxed processes.
CREATE TABLE releases_new (
    deployment    TEXT PRIMARY KEY,
    handle        TEXT NOT NULL,         -- the runtime's handle, JSON
    port          INTEGER NOT NULL,
    status        TEXT NOT NULL,         -- starting healthy restarting draining
    restarts      INTEGER NOT NULL DEFAULT 0,
    started_at    REAL NOT NULL
);
INSERT INTO releases_new (deployment, handle, port, status, restarts, started_at)
    SELECT deployment,
           json_object('runtime', 'unsandboxed', 'pid', pid, 'start', proc_start,
                       'cgroup', json('null')),
           port, status, restarts, started_at
    FROM releases;
DROP TABLE releases;
ALTER TABLE releases_new RENAME TO releases;

-- The read-only directories a deployment's artifact needs besides itself (its
-- cached dependencies), JSON: decided by the builder, never read back from the
-- artifact (which the build's own code could have changed).
ALTER TABLE deployments ADD COLUMN layers TEXT NOT NULL DEFAULT '[]';
