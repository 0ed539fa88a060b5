-- Prepared environment images, one row per runner node and cache key: what the API shows
-- of a repository's environment (its state, the setup's log, its size, its last use).
-- `state` is building, ready or failed. Times are milliseconds from the database clock.
CREATE TABLE environments (
    node_id     TEXT NOT NULL,
    cache_key   TEXT NOT NULL,
    repo_url    TEXT NOT NULL,
    image       TEXT NOT NULL,
    state       TEXT NOT NULL,
    log         TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    last_used   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (node_id, cache_key)
);
CREATE INDEX environments_by_repo ON environments(repo_url);

-- Secrets a user gives the setup of their tasks on one repository (a package registry's
-- token, say), sealed like GitHub tokens: `sealed` is the 24-byte nonce followed by the
-- XChaCha20-Poly1305 ciphertext, with the owner's id as authenticated data.
CREATE TABLE setup_secrets (
    owner_id    BLOB NOT NULL REFERENCES users(id),
    repo_url    TEXT NOT NULL,
    name        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (owner_id, repo_url, name)
);
