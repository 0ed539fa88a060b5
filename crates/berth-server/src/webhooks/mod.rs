//! Outgoing webhooks: users register endpoints (`routes/webhooks.rs`); task events are queued
//! in the store's outbox with the status change that makes them, and the sender here delivers
//! them, signed per Standard Webhooks, at least once, with the same `webhook-id` on every
//! attempt, retried with backoff across restarts, and never again once an endpoint answered
//! 2xx. It connects only where the guard on outside addresses approves, to the addresses it
//! checked.

pub mod sender;
pub mod signing;
