-- Web Push subscriptions: one per browser (its push service endpoint) and user. Times are
-- milliseconds from the database clock.
CREATE TABLE push_subscriptions (
    id          BLOB PRIMARY KEY,
    owner_id    BLOB NOT NULL REFERENCES users(id),
    endpoint    TEXT NOT NULL,
    p256dh      TEXT NOT NULL,
    auth        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (owner_id, endpoint)
);
CREATE INDEX push_subscriptions_by_endpoint ON push_subscriptions(endpoint);
