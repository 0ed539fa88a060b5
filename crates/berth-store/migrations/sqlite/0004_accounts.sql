-- Accounts: GitHub identity, admins, disabled users, web sessions, sign-in states,
-- encrypted GitHub tokens and the audit log. Times are milliseconds from the database clock.

ALTER TABLE users ADD COLUMN github_id INTEGER;
ALTER TABLE users ADD COLUMN login TEXT;
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
CREATE UNIQUE INDEX users_by_github_id ON users(github_id);

-- Only a SHA-256 hash of the session id (the cookie's value) is kept.
CREATE TABLE web_sessions (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users(id),
    session_hash  TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions(user_id);

-- An OAuth `state` (hashed) waiting for its callback, with its PKCE verifier.
CREATE TABLE sign_in_states (
    state_hash    TEXT PRIMARY KEY,
    verifier      TEXT NOT NULL,
    expires_at    INTEGER NOT NULL
);

-- `sealed` is the 24-byte nonce followed by the XChaCha20-Poly1305 ciphertext.
CREATE TABLE github_tokens (
    user_id       BLOB PRIMARY KEY REFERENCES users(id),
    key_id        TEXT NOT NULL,
    sealed        BLOB NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    actor_id      BLOB,
    action        TEXT NOT NULL,
    subject_id    BLOB,
    detail        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
