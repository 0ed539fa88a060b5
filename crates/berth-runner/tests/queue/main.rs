//! The queue end to end on SQLite and PostgreSQL: real runners claiming from a real database,
//! with scripted executors standing in for the agent.

mod harness;

mod cancel;
mod claims;
mod fairness;
mod recovery;
