//! API tests: each starts the real application over HTTP on a fresh database. The same
//! suite runs on SQLite and, with `TM_TEST_DATABASE_URL` set, on PostgreSQL.

#![allow(
    clippy::too_many_lines,
    reason = "a test (or a table of cases) reads top to bottom as one scenario"
)]

mod auth;
mod backups;
mod bad_input;
mod bootstrap;
mod bounds;
mod concurrency;
mod connections;
mod constraints;
mod dlq;
mod events;
mod front;
mod health;
mod history;
mod idempotency;
mod keys;
mod observability;
mod policy;
mod probes;
mod propagation;
mod rate_limits;
mod raw;
mod rejected_rows;
mod resilience;
mod resolve;
mod routes;
mod watch;
mod webhooks;
