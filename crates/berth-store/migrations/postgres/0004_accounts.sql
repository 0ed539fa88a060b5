-- Accounts: GitHub identity, admins, disabled users, web sessions, sign-in states,
-- encrypted GitHub tokens and the audit log. Times are milliseconds from the database clock.

ALTER TABLE users ADD COLUMN github_id BIGINT;
ALTER TABLE users ADD COLUMN login TEXT;
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
CREATE UNIQUE INDEX users_by_github_id ON users(github_id);

-- Only a SHA-256 hash of the session id (the cookie's value) is kept.
CREATE TABLE web_sessions (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users(id),
    session_hash  TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions(user_id);

-- An OAuth `state` (hashed) waiting for its callback, with its PKCE verifier.
CREATE TABLE sign_in_states (
    state_hash    TEXT PRIMARY KEY,
    verifier      TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- `sealed` is the 24-byte nonce followed by the XChaCha20-Poly1305 ciphertext.
CREATE TABLE github_tokens (
    user_id       UUID PRIMARY KEY REFERENCES users(id),
    key_id        TEXT NOT NULL,
    sealed        BYTEA NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE audit_log (
    seq           BIGSERIAL PRIMARY KEY,
    actor_id      UUID,
    action        TEXT NOT NULL,
    subject_id    UUID,
    detail        TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
