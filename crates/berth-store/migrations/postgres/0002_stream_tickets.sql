-- Short-lived, single-use tickets that let a browser open a stream without headers.
CREATE TABLE stream_tickets (
    ticket_hash  TEXT PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users(id),
    expires_at   BIGINT NOT NULL
);
