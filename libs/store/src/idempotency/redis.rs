//! The Redis backend: one key per idempotency key, value `0` + holder (in flight) or `1` +
//! response (completed).
//!
//! - claim: `SET ns:key 0<holder> NX PX lease`; if the key exists, `GET` it. Should it
//!   expire between the two commands, try again.
//! - complete: `SET ns:key 1<response> PX ttl`.
//! - abandon: a Lua script deletes the key only while it holds *this holder's* in-flight
//!   value, so a late failure never erases a response that another attempt completed, nor
//!   the claim of another attempt that took over after this one's lease ran out.

use std::time::Duration;

use fred::bytes::Bytes;
use fred::prelude::{
    Builder, ClientLike, Config, Expiration, KeysInterface, LuaInterface, ReconnectPolicy,
    SetOptions, Value,
};

use super::{Claim, px_millis};
use crate::error::{StoreError, redact_url};

const IN_FLIGHT: u8 = 0;
const COMPLETED: u8 = 1;

/// How long [`RedisStore::connect`] waits for the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on one command, so a hung Redis fails requests instead of stalling them.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// `SET NX` then `GET` can both miss if the key expires in between; that takes a key
/// expiring at exactly that moment every time to exhaust these attempts.
const CLAIM_ATTEMPTS: usize = 5;

const ABANDON_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

/// Idempotency keys in Redis, prefixed with `namespace:`. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    client: fred::prelude::Client,
    namespace: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`), failing within about two seconds
    /// if the server is unreachable. Later disconnects are retried with backoff.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::RedisConnect {
            url: redact_url(url),
            source,
        };
        let config = Config::from_url(url).map_err(connect_error)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = CONNECT_TIMEOUT;
            })
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .map_err(connect_error)?;
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
            Ok(Ok(_connection_task)) => {}
            Ok(Err(source)) => return Err(connect_error(source)),
            Err(_elapsed) => {
                let _ = client.quit().await;
                return Err(connect_error(fred::error::Error::new(
                    fred::error::ErrorKind::Timeout,
                    "timed out connecting",
                )));
            }
        }
        Ok(RedisStore {
            client,
            namespace: namespace.to_owned(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    pub(super) async fn claim(
        &self,
        key: &str,
        holder: &[u8],
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let key = self.key(key);
        let in_flight = tagged(IN_FLIGHT, holder);
        for _ in 0..CLAIM_ATTEMPTS {
            let set: Value = self
                .client
                .set(
                    &key,
                    Value::Bytes(in_flight.clone()),
                    Some(Expiration::PX(px_millis(lease))),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if !set.is_null() {
                return Ok(Claim::Acquired);
            }
            let value: Value = self.client.get(&key).await?;
            match value.into_bytes().as_deref() {
                None => continue, // expired since the SET: try again
                Some([COMPLETED, response @ ..]) => return Ok(Claim::Completed(response.to_vec())),
                Some([_, holder @ ..]) => return Ok(Claim::InFlight(holder.to_vec())),
                Some([]) => return Ok(Claim::InFlight(Vec::new())),
            }
        }
        // Another caller keeps winning the key as it frees up: it is in flight.
        Ok(Claim::InFlight(Vec::new()))
    }

    pub(super) async fn complete(
        &self,
        key: &str,
        response: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .set(
                self.key(key),
                Value::Bytes(tagged(COMPLETED, response)),
                Some(Expiration::PX(px_millis(ttl))),
                None,
                false,
            )
            .await?;
        Ok(())
    }

    pub(super) async fn abandon(&self, key: &str, holder: &[u8]) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .eval(
                ABANDON_SCRIPT,
                self.key(key),
                Value::Bytes(tagged(IN_FLIGHT, holder)),
            )
            .await?;
        Ok(())
    }
}

/// `tag` followed by `bytes`.
fn tagged(tag: u8, bytes: &[u8]) -> Bytes {
    let mut value = Vec::with_capacity(bytes.len() + 1);
    value.push(tag);
    value.extend_from_slice(bytes);
    value.into()
}
