-- Follow-ups sent with an Idempotency-Key: a retried one is answered, not queued twice.
CREATE TABLE follow_ups (
    task_id          UUID NOT NULL REFERENCES tasks(id),
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (task_id, idempotency_key)
);
