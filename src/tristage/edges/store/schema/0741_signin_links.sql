-- One-time dashboard sign-in links ('tristage open'): only a sha256 of each code is
-- stored; a link opens one session, once, until it expires (minutes).
CREATE TABLE api_signin_links (
    code_sha256   TEXT PRIMARY KEY,      -- hex sha256 of the code in the link
    token_id      TEXT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    used_at       REAL
);
CREATE INDEX api_signin_links_token ON api_signin_links (token_id);
