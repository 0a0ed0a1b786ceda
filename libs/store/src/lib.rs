//! Storage for the lab's services: one SQL pool chosen by URL, and the idempotency store.
//!
//! The same binaries run embedded (SQLite files, idempotency keys in memory, no servers) and
//! on the full stack (Postgres and Redis); only URLs change. So every service opens its
//! storage through this crate and writes its SQL once for both dialects.
//!
//! Layout:
//! - [`db`]: [`Db`], a SQLite file (in-process, one connection) or a Postgres pool for a
//!   `sqlite:` or `postgres:` URL, migrated at connect from [`Migration`]s written in code;
//!   a Postgres schema per service; helpers ([`now_ms`], [`sqlite_url_for`]).
//! - [`query`](mod@query): [`query()`] with `$N` binds, run on a [`Db`] or in a [`Tx`], answering
//!   owned [`Row`]s; [`DbError`] (which tells unique violations and unavailability).
//! - [`idempotency`]: [`IdempotencyStore`], one atomic claim / complete / abandon API over
//!   memory or Redis, and [`Idempotency`], the claim / replay / in-flight protocol on top of
//!   it that every service uses (parameters checked, duplicates wait for the holder).
//! - [`testing`]: test helpers for a real Postgres and Redis (unique schemas, loud failures
//!   when a server is missing). Not `cfg(test)`, so other crates' tests can use it.
//! - [`StoreError`]: the one error type; URLs in it never show a password.

pub mod db;
mod error;
pub mod idempotency;
pub mod query;
pub mod testing;

pub use db::{Backend, Db, DbConfig, Migration, now_ms, sqlite_url_for};
pub use error::StoreError;
pub use idempotency::{
    Begin, Claim, Claimed, Fingerprint, Idempotency, IdempotencyError, IdempotencyStore,
    MemoryStore, RedisStore,
};
pub use query::{DbError, Row, Tx, Value, query};
