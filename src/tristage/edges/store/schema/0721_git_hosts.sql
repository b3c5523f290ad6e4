-- Git hosts: a project connected to its repository on GitHub, GitLab or Gitea
-- (`tristage connect`). The API token and the webhook secret are sealed by the
-- secrets box; the clone URL never holds the token (git is given it in a header).
CREATE TABLE git_connections (
    project       TEXT PRIMARY KEY,
    host          TEXT NOT NULL,         -- github | gitlab | gitea (a registered GitHost)
    repo          TEXT NOT NULL,         -- OWNER/NAME (GitLab: the project's full path)
    web_url       TEXT NOT NULL,         -- https://github.com, or the self-hosted instance
    api_url       TEXT NOT NULL,         -- the REST API's base URL
    clone_url     TEXT NOT NULL,         -- https://… (token sent as a header), ssh, file://
    token         BLOB NOT NULL,         -- sealed API token
    secret        BLOB NOT NULL,         -- sealed webhook secret
    created_at    REAL NOT NULL,
    created_by    TEXT NOT NULL
);

-- Host deliveries seen, by delivery id: a replayed delivery is refused.
CREATE TABLE git_deliveries (
    project       TEXT NOT NULL,
    delivery      TEXT NOT NULL,
    host          TEXT NOT NULL,
    event         TEXT NOT NULL,         -- push, pull_request, ping, ignored: ...
    received_at   REAL NOT NULL,
    job           TEXT,                  -- the event to act on, JSON (until acted on)
    outcome       TEXT,                  -- what the background work did
    PRIMARY KEY (project, delivery)
);
CREATE INDEX git_deliveries_age ON git_deliveries (received_at);

-- One row per pull request (merge request) with a preview: its head, the one comment
-- tristage keeps up to date on it, and the deployment that serves it.
CREATE TABLE pull_requests (
    project       TEXT NOT NULL,
    number        INTEGER NOT NULL,
    head_branch   TEXT NOT NULL,
    head_sha      TEXT NOT NULL,
    state         TEXT NOT NULL,         -- open | closed
    comment_id    TEXT,
    deployment    TEXT,
    reported      TEXT,                  -- the last commit status sent: pending success failure
    updated_at    REAL NOT NULL,
    PRIMARY KEY (project, number)
);

-- Branches whose releases are stopped (a deleted branch, a closed pull request): their
-- latest deployment no longer runs nor has a branch host. A new deployment of the
-- branch removes its row.
CREATE TABLE stopped_branches (
    project       TEXT NOT NULL,
    branch        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at            REAL NOT NULL,
    PRIMARY KEY (project, branch)
);
