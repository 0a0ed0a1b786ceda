//! Load shedding at the gateway: a fixed cap on requests in flight.
//!
//! # Why
//!
//! Past its capacity a server does not serve fewer requests, it serves them all *later*:
//! queues grow, every request waits behind the others, latency passes the callers'
//! deadlines and goodput falls towards zero while the server stays busy — with work nobody
//! awaits any more. Refusing the excess at once keeps the admitted requests fast, and tells
//! the callers (RESOURCE_EXHAUSTED, with an optional `grpc-retry-pushback-ms`) to back off
//! instead of piling on. Shedding must be cheaper than serving, so nothing waits here: a
//! request over `max_in_flight` is refused on the spot, before any work.
//!
//! Built from tower's own pieces: [`LoadShed`] over a [`ConcurrencyLimit`] whose semaphore
//! the [`Shedder`] owns (so every connection's clone of the server stack shares one cap),
//! plus a typed error ([`Shed`]) and metrics. `ConcurrencyLimit` takes its place in
//! `poll_ready`; tonic (through hyper-util) drives each request with `oneshot` on a fresh
//! clone of the stack, so a place is held exactly from admission until the response future
//! completes or is dropped. (A caller that instead keeps one service instance and polls it
//! ready without calling it holds a place meanwhile — tower's usual readiness contract.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::load_shed::error::Overloaded;
use tower::{Layer, Service};

use crate::BoxError;
use crate::setting::ConfigError;

/// The largest cap a profile may set.
pub const MAX_IN_FLIGHT: u32 = 1_000_000;
/// The longest pushback a refusal may ask for (one minute).
pub const MAX_PUSHBACK_MS: u64 = 60_000;

/// `shed:` in a profile's server policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShedConfig {
    /// Requests in flight at most; more are refused with RESOURCE_EXHAUSTED.
    pub max_in_flight: u32,
    /// Retry pushback sent with a refusal (`grpc-retry-pushback-ms`), if any.
    #[serde(default)]
    pub pushback_ms: Option<u64>,
}

impl ShedConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(ConfigError::new(
                format!("{key}.max_in_flight"),
                format!(
                    "must be between 1 and {MAX_IN_FLIGHT}, got {}",
                    self.max_in_flight
                ),
            ));
        }
        validate_pushback(self.pushback_ms, key)
    }
}

/// `{key}.pushback_ms`, when set, is at most [`MAX_PUSHBACK_MS`] (0 is allowed: "retry now").
pub(crate) fn validate_pushback(pushback_ms: Option<u64>, key: &str) -> Result<(), ConfigError> {
    match pushback_ms {
        Some(ms) if ms > MAX_PUSHBACK_MS => Err(ConfigError::new(
            format!("{key}.pushback_ms"),
            format!("must be at most {MAX_PUSHBACK_MS} ms, got {ms}"),
        )),
        _ => Ok(()),
    }
}

/// The request was refused because too many are in flight.
#[derive(Debug, Clone, thiserror::Error)]
#[error("overloaded: {max_in_flight} requests in flight, request shed")]
pub struct Shed {
    pub max_in_flight: u32,
    pub pushback: Option<Duration>,
}

/// `resilience_shed_total` and `resilience_in_flight` (gauge). One per server process.
#[derive(Clone, Debug, Default)]
pub struct ShedMetrics {
    shed: Counter,
    in_flight: Gauge,
}

impl ShedMetrics {
    pub fn register(registry: &mut Registry) -> ShedMetrics {
        let m = ShedMetrics::default();
        registry.register(
            crate::metric_names::SHED,
            "Requests refused at once because max_in_flight requests were in flight",
            m.shed.clone(),
        );
        registry.register(
            crate::metric_names::IN_FLIGHT,
            "Requests admitted by the load shedder and not finished yet",
            m.in_flight.clone(),
        );
        m
    }
}

/// A server's load shedder, shared by every clone of its layer and services.
#[derive(Clone, Debug)]
pub struct Shedder {
    max_in_flight: u32,
    pushback: Option<Duration>,
    places: Arc<Semaphore>,
    metrics: ShedMetrics,
}

impl Shedder {
    pub fn new(config: &ShedConfig, metrics: &ShedMetrics) -> Shedder {
        Shedder {
            max_in_flight: config.max_in_flight,
            pushback: config.pushback_ms.map(Duration::from_millis),
            places: Arc::new(Semaphore::new(config.max_in_flight as usize)),
            metrics: metrics.clone(),
        }
    }

    pub fn layer(&self) -> ShedLayer {
        ShedLayer {
            shedder: self.clone(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        let free = self.places.available_permits() as u32;
        self.max_in_flight.saturating_sub(free)
    }

    /// `{"max_in_flight", "in_flight", "shed", "pushback_ms"}` for `/state`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight(),
            "shed": self.metrics.shed.get(),
            "pushback_ms": self.pushback.map(|p| p.as_millis() as u64),
        })
    }
}

/// Builds [`ShedService`]s that share one [`Shedder`].
#[derive(Clone, Debug)]
pub struct ShedLayer {
    shedder: Shedder,
}

impl<S> Layer<S> for ShedLayer {
    type Service = ShedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let counted = InFlight {
            inner,
            gauge: self.shedder.metrics.in_flight.clone(),
        };
        ShedService {
            inner: LoadShed::new(ConcurrencyLimit::with_semaphore(
                counted,
                self.shedder.places.clone(),
            )),
            shedder: self.shedder.clone(),
        }
    }
}

/// Refuses a request at once with [`Shed`] when `max_in_flight` are in flight.
#[derive(Clone, Debug)]
pub struct ShedService<S> {
    inner: LoadShed<ConcurrencyLimit<InFlight<S>>>,
    shedder: Shedder,
}

impl<S, Req> Service<Req> for ShedService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ShedFuture<
        tower::load_shed::future::ResponseFuture<
            tower::limit::concurrency::future::ResponseFuture<InFlightFuture<S::Future>>,
        >,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Always ready (LoadShed): a full server answers at once instead of making callers wait.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ShedFuture {
            inner: self.inner.call(req),
            shedder: self.shedder.clone(),
        }
    }
}

/// The response future of [`ShedService`]: tower's `Overloaded` becomes [`Shed`].
#[pin_project::pin_project]
pub struct ShedFuture<F> {
    #[pin]
    inner: F,
    shedder: Shedder,
}

impl<F, T> Future for ShedFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        Poll::Ready(result.map_err(|e| {
            if e.is::<Overloaded>() {
                this.shedder.metrics.shed.inc();
                Box::new(Shed {
                    max_in_flight: this.shedder.max_in_flight,
                    pushback: this.shedder.pushback,
                }) as BoxError
            } else {
                e
            }
        }))
    }
}

/// Keeps `resilience_in_flight` up to date: only admitted requests get here. (Public only
/// because it is part of [`ShedService`]'s future type.)
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    gauge: Gauge,
}

impl<S, Req> Service<Req> for InFlight<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        InFlightFuture {
            guard: Some(GaugeGuard::new(&self.gauge)),
            inner: self.inner.call(req),
        }
    }
}

/// Holds one unit of the in-flight gauge until the response is ready or the future dropped.
#[pin_project::pin_project]
pub struct InFlightFuture<F> {
    #[pin]
    inner: F,
    guard: Option<GaugeGuard>,
}

impl<F: Future> Future for InFlightFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.guard.take();
        Poll::Ready(output)
    }
}

/// One unit of a gauge, given back when dropped.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key_and_the_value() {
        let err = ShedConfig {
            max_in_flight: 0,
            pushback_ms: None,
        }
        .validate("resilience.services.gateway.shed")
        .unwrap_err();
        assert_eq!(err.key, "resilience.services.gateway.shed.max_in_flight");
        assert!(err.message.contains("got 0"), "{err}");

        let err = ShedConfig {
            max_in_flight: 200,
            pushback_ms: Some(120_000),
        }
        .validate("s")
        .unwrap_err();
        assert_eq!(err.key, "s.pushback_ms");
        assert!(err.message.contains("120000"), "{err}");

        ShedConfig {
            max_in_flight: 200,
            pushback_ms: Some(0),
        }
        .validate("s")
        .unwrap();
    }
}
