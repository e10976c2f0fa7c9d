//! API tests: each starts the real application over HTTP on a fresh database. The same
//! suite runs on SQLite and, with `TM_TEST_DATABASE_URL` set, on PostgreSQL.

mod concurrency;
mod health;
mod helpers;
mod resolve;
mod routes;
