//! Integration tests: the real server on port 0, driven over HTTP by the typed client, on
//! SQLite and on PostgreSQL.

mod harness;

mod accounts;
mod accounts_security;
mod browser;
mod errors;
mod followups;
mod idempotency;
mod openapi;
mod pagination;
mod restart;
mod stream;
mod tasks;
mod tenancy;
mod tokens;
