//! Idempotency keys: run a request once, replay its response to every retry.
//!
//! Two layers:
//!
//! - [`IdempotencyStore`], the raw atomic record per key. A handler
//!   [`claim`](IdempotencyStore::claim)s the key before doing the work:
//!   [`Claim::Acquired`] (this caller runs it, then
//!   [`complete`](IdempotencyStore::complete)s with the response, or
//!   [`abandon`](IdempotencyStore::abandon)s so a retry may run it again);
//!   [`Claim::InFlight`] (another attempt runs it right now); [`Claim::Completed`] (it ran:
//!   replay these bytes). The claim is a *lease*: if its holder dies without completing or
//!   abandoning, the key frees itself when the lease expires. Two callers never both hold a
//!   live lease on one key.
//! - [`Idempotency`] ([`protocol`]), the protocol every service runs on top of it: the
//!   request's parameters ([`Fingerprint`]) travel with the key, so a reuse of the key for
//!   another request is refused naming what differs; a duplicate that finds the key in
//!   flight waits for the holder's answer (woken at once in this process, polled with
//!   backoff across processes) instead of failing or running the work again.
//!
//! Two backends behind one type: [`MemoryStore`] (one process, the local default) and
//! [`RedisStore`] (shared by every replica of a service).

mod memory;
pub mod protocol;
mod redis;

use std::time::Duration;

pub use memory::MemoryStore;
pub use protocol::{Begin, Claimed, Difference, Fingerprint, Idempotency, IdempotencyError};
pub use redis::RedisStore;

use crate::error::StoreError;

/// What [`IdempotencyStore::claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: the caller holds it and must complete or abandon it.
    Acquired,
    /// Another caller holds the key and its lease is alive; the bytes it claimed with.
    InFlight(Vec<u8>),
    /// The request already completed; these are the response bytes to replay.
    Completed(Vec<u8>),
}

/// The idempotency store of one service.
#[derive(Clone, Debug)]
pub enum IdempotencyStore {
    /// In this process only.
    Memory(MemoryStore),
    /// In Redis, keys prefixed with a namespace.
    Redis(RedisStore),
}

impl IdempotencyStore {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        IdempotencyStore::Memory(MemoryStore::default())
    }

    /// Redis at `redis_url` with keys prefixed by `namespace:` (e.g. `orders`), or an
    /// in-memory store when `redis_url` is `None`.
    pub async fn connect(redis_url: Option<&str>, namespace: &str) -> Result<Self, StoreError> {
        match redis_url {
            None => Ok(Self::memory()),
            Some(url) => Ok(IdempotencyStore::Redis(
                RedisStore::connect(url, namespace).await?,
            )),
        }
    }

    /// Atomically: absent or expired => record an in-flight claim holding `holder` (bytes
    /// that identify this attempt, returned to whoever finds the key in flight) with a
    /// lease, and return [`Claim::Acquired`]; in flight (lease alive) => [`Claim::InFlight`]
    /// with the holder's bytes; completed (TTL alive) => [`Claim::Completed`] with the
    /// response bytes.
    pub async fn claim(
        &self,
        key: &str,
        holder: &[u8],
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        match self {
            IdempotencyStore::Memory(m) => Ok(m.claim(key, holder, lease)),
            IdempotencyStore::Redis(r) => r.claim(key, holder, lease).await,
        }
    }

    /// Stores the response for replay for `ttl` (e.g. 24 h), replacing any claim.
    pub async fn complete(
        &self,
        key: &str,
        response: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            IdempotencyStore::Memory(m) => {
                m.complete(key, response, ttl);
                Ok(())
            }
            IdempotencyStore::Redis(r) => r.complete(key, response, ttl).await,
        }
    }

    /// Drops the in-flight claim of `holder` (its request failed; a retry may execute
    /// again). A completed response, or another holder's claim, is kept.
    pub async fn abandon(&self, key: &str, holder: &[u8]) -> Result<(), StoreError> {
        match self {
            IdempotencyStore::Memory(m) => {
                m.abandon(key, holder);
                Ok(())
            }
            IdempotencyStore::Redis(r) => r.abandon(key, holder).await,
        }
    }

    /// `"memory"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            IdempotencyStore::Memory(_) => "memory",
            IdempotencyStore::Redis(_) => "redis",
        }
    }
}

/// Milliseconds for a Redis `PX` argument: at least 1 (Redis rejects `PX 0`).
fn px_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}
