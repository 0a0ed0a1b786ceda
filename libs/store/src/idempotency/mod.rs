//! Idempotency keys: run a request once, replay its response to every retry.
//!
//! A handler [`claim`](IdempotencyStore::claim)s the request's key before doing the work:
//!
//! - [`Claim::Acquired`]: this caller runs the request, then calls
//!   [`complete`](IdempotencyStore::complete) with the response (or
//!   [`abandon`](IdempotencyStore::abandon) if it failed, so a retry may run it again);
//! - [`Claim::InFlight`]: another attempt is running it right now;
//! - [`Claim::Completed`]: it already ran; replay these response bytes.
//!
//! The claim is a *lease*: if its holder dies without completing or abandoning, the key
//! frees itself when the lease expires. Two callers never both hold a live lease on one key.
//!
//! Two backends behind one type: [`MemoryStore`] (one process, the local default) and
//! [`RedisStore`] (shared by every replica of a service).

mod memory;
mod redis;

use std::time::Duration;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::error::StoreError;

/// What [`IdempotencyStore::claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: the caller holds it and must complete or abandon it.
    Acquired,
    /// Another caller holds the key and its lease is alive.
    InFlight,
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

    /// Atomically: absent or expired => record an in-flight claim with a lease and return
    /// [`Claim::Acquired`]; in flight (lease alive) => [`Claim::InFlight`]; completed (TTL
    /// alive) => [`Claim::Completed`] with the response bytes.
    pub async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        match self {
            IdempotencyStore::Memory(m) => Ok(m.claim(key, lease)),
            IdempotencyStore::Redis(r) => r.claim(key, lease).await,
        }
    }

    /// Stores the response for replay for `ttl` (e.g. 24 h), replacing the claim.
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

    /// Drops an in-flight claim (the request failed; a retry may execute again).
    /// A completed response is kept.
    pub async fn abandon(&self, key: &str) -> Result<(), StoreError> {
        match self {
            IdempotencyStore::Memory(m) => {
                m.abandon(key);
                Ok(())
            }
            IdempotencyStore::Redis(r) => r.abandon(key).await,
        }
    }

    /// Claims, and while another request holds the key in flight, polls every `poll` until
    /// it completes ([`Claim::Completed`]), its lease expires (this caller then gets
    /// [`Claim::Acquired`]), or `wait` elapses ([`Claim::InFlight`]).
    pub async fn claim_or_wait(
        &self,
        key: &str,
        lease: Duration,
        wait: Duration,
        poll: Duration,
    ) -> Result<Claim, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let poll = poll.max(Duration::from_millis(1));
        loop {
            let claim = self.claim(key, lease).await?;
            let now = tokio::time::Instant::now();
            if claim != Claim::InFlight || now >= deadline {
                return Ok(claim);
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
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
