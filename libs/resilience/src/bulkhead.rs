//! Bulkhead: bounded concurrency per downstream, with a bounded wait.
//!
//! # Why
//!
//! A slow downstream does not fail calls, it *holds* them: every call to a payments service
//! that takes 2 s instead of 50 ms keeps a task, a connection slot and the caller's own
//! request waiting, and the caller's other work (calls to inventory, health checks) starves
//! behind them. A bulkhead — after the watertight compartments of a ship's hull — caps the
//! calls in flight to one downstream, so a flooded compartment cannot sink the rest: at most
//! `max_concurrent` calls wait on payments however slow it gets. A call that finds the
//! bulkhead full waits at most `max_wait_ms` for a place and is then refused
//! ([`BulkheadFull`], RESOURCE_EXHAUSTED): failing fast, while the caller still has time to
//! do something else, beats queueing without bound for an answer that comes too late.
//!
//! Tower's `ConcurrencyLimit` waits without bound (in `poll_ready`, so it cannot even tell
//! which request waited); this layer waits in the response future, with a timer.
//!
//! A place is held from admission until the response future completes or is dropped
//! (cancelled by a timeout, a hedge, a caller that went away): a response's headers, for
//! unary gRPC, come when the callee has finished its work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::BoxError;
use crate::setting::ConfigError;

/// The most places a bulkhead may have: more is no bulkhead at all.
pub const MAX_CONCURRENT: u32 = 100_000;
/// The longest a call may wait for a place (one minute): longer is a queue, not a bulkhead.
pub const MAX_WAIT_MS: u64 = 60_000;

/// `bulkhead:` in a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls in flight to this downstream at most.
    pub max_concurrent: u32,
    /// How long a call may wait for a free place before RESOURCE_EXHAUSTED (0: no wait).
    #[serde(default)]
    pub max_wait_ms: u64,
}

impl BulkheadConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT {
            return Err(ConfigError::new(
                format!("{key}.max_concurrent"),
                format!(
                    "must be between 1 and {MAX_CONCURRENT}, got {}",
                    self.max_concurrent
                ),
            ));
        }
        if self.max_wait_ms > MAX_WAIT_MS {
            return Err(ConfigError::new(
                format!("{key}.max_wait_ms"),
                format!(
                    "must be at most {MAX_WAIT_MS} ms (0: no wait), got {}",
                    self.max_wait_ms
                ),
            ));
        }
        Ok(())
    }
}

/// No place freed up within the bounded wait.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bulkhead for {hop} is full ({max_concurrent} calls in flight; waited {waited_ms} ms)")]
pub struct BulkheadFull {
    pub hop: String,
    pub max_concurrent: u32,
    pub waited_ms: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabels {
    hop: String,
}

/// `resilience_bulkhead_in_use{hop}` (gauge) and `resilience_bulkhead_rejections_total{hop}`.
/// Register once per process; every hop's bulkhead shares the families.
#[derive(Clone, Debug, Default)]
pub struct BulkheadMetrics {
    in_use: Family<HopLabels, Gauge>,
    rejections: Family<HopLabels, Counter>,
}

impl BulkheadMetrics {
    pub fn register(registry: &mut Registry) -> BulkheadMetrics {
        let m = BulkheadMetrics::default();
        registry.register(
            crate::metric_names::BULKHEAD_IN_USE,
            "Calls holding a bulkhead place (in flight to the downstream)",
            m.in_use.clone(),
        );
        registry.register(
            crate::metric_names::BULKHEAD_REJECTIONS,
            "Calls refused because the bulkhead stayed full for the whole bounded wait",
            m.rejections.clone(),
        );
        m
    }
}

/// One downstream's bulkhead, shared by every clone of its layer and services.
#[derive(Clone, Debug)]
pub struct Bulkhead {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    hop: String,
    max_concurrent: u32,
    max_wait: Duration,
    places: Arc<Semaphore>,
    waiting: AtomicU64,
    in_use: Gauge,
    rejections: Counter,
}

impl Bulkhead {
    pub fn new(hop: &str, config: &BulkheadConfig, metrics: &BulkheadMetrics) -> Bulkhead {
        let labels = HopLabels {
            hop: hop.to_string(),
        };
        Bulkhead {
            shared: Arc::new(Shared {
                hop: hop.to_string(),
                max_concurrent: config.max_concurrent,
                max_wait: Duration::from_millis(config.max_wait_ms),
                places: Arc::new(Semaphore::new(config.max_concurrent as usize)),
                waiting: AtomicU64::new(0),
                in_use: metrics.in_use.get_or_create_owned(&labels),
                rejections: metrics.rejections.get_or_create_owned(&labels),
            }),
        }
    }

    pub fn layer(&self) -> BulkheadLayer {
        BulkheadLayer {
            bulkhead: self.clone(),
        }
    }

    /// Places taken now.
    pub fn in_use(&self) -> u32 {
        let free = self.shared.places.available_permits() as u32;
        self.shared.max_concurrent.saturating_sub(free)
    }

    /// Calls waiting for a place now.
    pub fn waiting(&self) -> u64 {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// `{"hop", "max_concurrent", "max_wait_ms", "in_use", "waiting", "rejections"}` for
    /// `/state`.
    pub fn snapshot(&self) -> serde_json::Value {
        let s = &self.shared;
        serde_json::json!({
            "hop": s.hop,
            "max_concurrent": s.max_concurrent,
            "max_wait_ms": s.max_wait.as_millis() as u64,
            "in_use": self.in_use(),
            "waiting": self.waiting(),
            "rejections": s.rejections.get(),
        })
    }
}

impl Shared {
    fn admit(&self, permit: OwnedSemaphorePermit) -> Place {
        self.in_use.inc();
        Place {
            _permit: permit,
            in_use: self.in_use.clone(),
        }
    }

    fn reject(&self, waited: Duration) -> BoxError {
        self.rejections.inc();
        Box::new(BulkheadFull {
            hop: self.hop.clone(),
            max_concurrent: self.max_concurrent,
            waited_ms: waited.as_millis() as u64,
        })
    }
}

/// A place in the bulkhead; freed when dropped.
struct Place {
    _permit: OwnedSemaphorePermit,
    in_use: Gauge,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

/// Counts a call among the waiting while it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Builds [`BulkheadService`]s that share one [`Bulkhead`].
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            shared: self.bulkhead.shared.clone(),
        }
    }
}

/// At most `max_concurrent` calls in flight through `inner`, the rest wait at most
/// `max_wait_ms` for a place, then fail with [`BulkheadFull`].
#[derive(Clone, Debug)]
pub struct BulkheadService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> Service<http::Request<B>> for BulkheadService<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        // A free place: straight through. (Waiters are served first: a freed place goes to
        // the oldest waiter, never to this fast path.)
        if let Ok(permit) = shared.places.clone().try_acquire_owned() {
            let place = shared.admit(permit);
            let fut = self.inner.call(req);
            return Box::pin(async move {
                let result = fut.await.map_err(Into::into);
                drop(place);
                result
            });
        }
        if shared.max_wait.is_zero() {
            let err = shared.reject(Duration::ZERO);
            return Box::pin(async move { Err(err) });
        }
        // Wait for a place with the service that was polled ready, leaving a fresh clone
        // for the next caller (which polls it ready itself).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let start = Instant::now();
            let acquired = {
                let _waiting = Waiting::new(&shared.waiting);
                tokio::time::timeout(shared.max_wait, shared.places.clone().acquire_owned()).await
            };
            match acquired {
                Ok(Ok(permit)) => {
                    let place = shared.admit(permit);
                    let result = inner.call(req).await.map_err(Into::into);
                    drop(place);
                    result
                }
                // Timed out (the semaphore is never closed).
                _ => Err(shared.reject(start.elapsed())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key_and_the_value() {
        let err = BulkheadConfig {
            max_concurrent: 0,
            max_wait_ms: 0,
        }
        .validate("resilience.hops.payments.bulkhead")
        .unwrap_err();
        assert_eq!(err.key, "resilience.hops.payments.bulkhead.max_concurrent");
        assert!(err.message.contains("got 0"), "{err}");

        let err = BulkheadConfig {
            max_concurrent: 20,
            max_wait_ms: 600_000,
        }
        .validate("b")
        .unwrap_err();
        assert_eq!(err.key, "b.max_wait_ms");
        assert!(err.message.contains("600000"), "{err}");

        BulkheadConfig {
            max_concurrent: 20,
            max_wait_ms: 50,
        }
        .validate("b")
        .unwrap();
    }

    #[test]
    fn wait_defaults_to_none_and_unknown_keys_are_refused() {
        let c: BulkheadConfig = serde_json::from_str(r#"{"max_concurrent": 5}"#).unwrap();
        assert_eq!(c.max_wait_ms, 0);
        let err = serde_json::from_str::<BulkheadConfig>(r#"{"max_concurrent": 5, "wait": 1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("wait"), "{err}");
    }
}
