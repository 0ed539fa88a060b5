-- Times are milliseconds since the Unix epoch, read from the database clock.

CREATE TABLE users (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_tokens_by_user ON api_tokens(user_id);

CREATE TABLE tasks (
    id                  UUID PRIMARY KEY,
    owner_id            UUID NOT NULL REFERENCES users(id),
    status              TEXT NOT NULL,
    repo_url            TEXT NOT NULL,
    git_ref             TEXT,
    prompt              TEXT NOT NULL,
    model               TEXT,
    network             TEXT NOT NULL,
    budget              JSONB NOT NULL,
    timeout_secs        BIGINT,
    open_pull_request   BOOLEAN NOT NULL,
    attempt             BIGINT NOT NULL DEFAULT 0,
    max_attempts        BIGINT NOT NULL,
    lease_owner         TEXT,
    lease_expires_at    BIGINT,
    not_before          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    has_diff            BOOLEAN NOT NULL DEFAULT FALSE,
    branch              TEXT,
    pull_request_url    TEXT,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens   BIGINT NOT NULL DEFAULT 0,
    cost_usd            DOUBLE PRECISION NOT NULL DEFAULT 0,
    error               TEXT,
    last_event_seq      BIGINT NOT NULL DEFAULT 0,
    idempotency_key     TEXT,
    request_hash        TEXT,
    UNIQUE (owner_id, idempotency_key)
);
CREATE INDEX tasks_by_owner ON tasks(owner_id, id);
CREATE INDEX tasks_by_status ON tasks(status, not_before);

CREATE TABLE task_events (
    task_id     UUID NOT NULL REFERENCES tasks(id),
    seq         BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- The model transcript: one row per message, in order, so a task can resume.
CREATE TABLE task_messages (
    task_id     UUID NOT NULL REFERENCES tasks(id),
    idx         BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    message     JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (task_id, idx)
);

CREATE TABLE task_diffs (
    task_id     UUID PRIMARY KEY REFERENCES tasks(id),
    diff        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
