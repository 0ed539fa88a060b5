//! Integration tests: the real server on port 0, driven over HTTP by the typed client, on
//! SQLite and on PostgreSQL.

mod harness;

mod accounts;
mod accounts_security;
mod browser;
mod environments;
mod errors;
mod every_operation;
mod followups;
mod github;
mod github_repositories;
mod idempotency;
mod openapi;
mod pagination;
mod pull_requests;
mod push;
mod restart;
mod revocation;
mod schema_fuzzing;
mod stream;
mod stream_fanout;
mod tasks;
mod tenancy;
mod tokens;
mod webhooks;
