//! The store's contract, as its trait docs state it, run on SQLite and on PostgreSQL: one
//! module per role (the queue's in two: claims, and how attempts end). The tests assert
//! promises (fencing, exactly once, owner scoping, limits), never an order or a timing the
//! implementation happens to have.

mod support;

mod accounts;
mod attempts;
mod claims;
mod environments;
mod events;
mod github;
mod live;
mod outbox;
mod push;
mod store;
mod tasks;
mod tokens;
mod transcript;
mod webhooks;
