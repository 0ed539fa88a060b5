-- GitHub as a front door, and outgoing webhooks. Times are milliseconds from the database
-- clock.

-- Every GitHub delivery taken, by its X-GitHub-Delivery id and by the SHA-256 of its body: a
-- redelivery, or the same signed body replayed under another id, does nothing twice.
CREATE TABLE github_deliveries (
    delivery_id   TEXT PRIMARY KEY,
    body_sha256   TEXT NOT NULL UNIQUE,
    event         TEXT NOT NULL,
    received_at   BIGINT NOT NULL
);

-- A task started from GitHub: where it came from, and Berth's comment there that tells how
-- it stands.
CREATE TABLE github_tasks (
    task_id          UUID PRIMARY KEY REFERENCES tasks(id),
    installation_id  BIGINT NOT NULL,
    repository       TEXT NOT NULL,
    issue_number     BIGINT NOT NULL,
    comment_id       BIGINT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX tasks_by_pull_request ON tasks(pull_request_url) WHERE pull_request_url IS NOT NULL;

-- Where a user's task events are delivered, signed with `secret` (Standard Webhooks).
CREATE TABLE webhook_endpoints (
    id          UUID PRIMARY KEY,
    owner_id    UUID NOT NULL REFERENCES users(id),
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    format      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX webhook_endpoints_by_owner ON webhook_endpoints(owner_id);

-- Messages to send, written in the transaction of what they tell: GitHub deliveries to act
-- on and task endings to answer there (`github`), task events for webhook endpoints
-- (`webhook`). A message is sent until it is acknowledged (`delivered_at`), then never again.
CREATE TABLE outbox (
    id                TEXT PRIMARY KEY,
    topic             TEXT NOT NULL,
    payload           JSONB NOT NULL,
    created_at        BIGINT NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT NOT NULL,
    lease_expires_at  BIGINT,
    delivered_at      BIGINT,
    given_up_at       BIGINT,
    last_error        TEXT
);
CREATE INDEX outbox_due ON outbox(topic, next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
