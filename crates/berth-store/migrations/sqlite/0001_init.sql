-- Times are milliseconds since the Unix epoch, read from the database clock.

CREATE TABLE users (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_tokens_by_user ON api_tokens(user_id);

CREATE TABLE tasks (
    id                  BLOB PRIMARY KEY,
    owner_id            BLOB NOT NULL REFERENCES users(id),
    status              TEXT NOT NULL,
    repo_url            TEXT NOT NULL,
    git_ref             TEXT,
    prompt              TEXT NOT NULL,
    model               TEXT,
    network             TEXT NOT NULL,
    budget              TEXT NOT NULL,
    timeout_secs        INTEGER,
    open_pull_request   INTEGER NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_expires_at    INTEGER,
    not_before          INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    has_diff            INTEGER NOT NULL DEFAULT 0,
    branch              TEXT,
    pull_request_url    TEXT,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_usd            REAL NOT NULL DEFAULT 0,
    error               TEXT,
    last_event_seq      INTEGER NOT NULL DEFAULT 0,
    idempotency_key     TEXT,
    request_hash        TEXT,
    UNIQUE (owner_id, idempotency_key)
);
CREATE INDEX tasks_by_owner ON tasks(owner_id, id);
CREATE INDEX tasks_by_status ON tasks(status, not_before);

CREATE TABLE task_events (
    task_id     BLOB NOT NULL REFERENCES tasks(id),
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;

-- The model transcript: one row per message, in order, so a task can resume.
CREATE TABLE task_messages (
    task_id     BLOB NOT NULL REFERENCES tasks(id),
    idx         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    message     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, idx)
) WITHOUT ROWID;

CREATE TABLE task_diffs (
    task_id     BLOB PRIMARY KEY REFERENCES tasks(id),
    diff        BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
