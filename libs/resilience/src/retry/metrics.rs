//! Client-side counters per hop, and the two layers that make retry amplification exact.
//!
//! [`CountLayer::requests`] sits outside the retry and hedge layers and counts logical calls
//! (first attempts); [`CountLayer::attempts`] sits inside them and counts every attempt sent
//! (first attempts, retries and hedges). Per hop, amplification = attempts / requests.
//!
//! | family | counted |
//! |---|---|
//! | `resilience_client_requests_total{hop}` | logical calls ([`CountLayer::requests`]) |
//! | `resilience_client_attempts_total{hop}` | attempts sent ([`CountLayer::attempts`]) |
//! | `resilience_retries_total{hop}` | retries decided ([`RetryLayer`](super::RetryLayer)) |
//! | `resilience_retry_budget_exhausted_total{hop}` | retries or hedges refused for lack of budget |
//! | `resilience_hedges_total{hop}` | hedges sent ([`HedgeLayer`](crate::hedge::HedgeLayer)) |

use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The label set of every family here.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HopLabels {
    pub hop: String,
}

/// The retry and hedge counters of a process, for every hop. Register once per registry;
/// clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct RetryMetrics {
    requests: Family<HopLabels, Counter>,
    attempts: Family<HopLabels, Counter>,
    retries: Family<HopLabels, Counter>,
    budget_exhausted: Family<HopLabels, Counter>,
    hedges: Family<HopLabels, Counter>,
}

impl RetryMetrics {
    /// Registers the five families (names without `_total`: the client library adds it).
    pub fn register(registry: &mut Registry) -> RetryMetrics {
        let m = RetryMetrics::default();
        registry.register(
            crate::metric_names::CLIENT_REQUESTS,
            "Logical client calls per hop (first attempts): the denominator of retry amplification",
            m.requests.clone(),
        );
        registry.register(
            crate::metric_names::CLIENT_ATTEMPTS,
            "Client attempts sent per hop, retries and hedges included",
            m.attempts.clone(),
        );
        registry.register(
            crate::metric_names::RETRIES,
            "Retries decided per hop",
            m.retries.clone(),
        );
        registry.register(
            crate::metric_names::RETRY_BUDGET_EXHAUSTED,
            "Retries or hedges not made because the hop's retry budget was empty",
            m.budget_exhausted.clone(),
        );
        registry.register(
            crate::metric_names::HEDGES,
            "Hedged attempts sent per hop",
            m.hedges.clone(),
        );
        m
    }

    /// Logical calls to `hop` so far.
    pub fn requests(&self, hop: &str) -> u64 {
        self.requests_counter(hop).get()
    }
    /// Attempts sent to `hop` so far.
    pub fn attempts(&self, hop: &str) -> u64 {
        self.attempts_counter(hop).get()
    }
    /// Retries decided for `hop` so far.
    pub fn retries(&self, hop: &str) -> u64 {
        self.retries_counter(hop).get()
    }
    /// Retries and hedges refused by `hop`'s budget so far.
    pub fn budget_exhausted(&self, hop: &str) -> u64 {
        self.budget_exhausted_counter(hop).get()
    }
    /// Hedges sent to `hop` so far.
    pub fn hedges(&self, hop: &str) -> u64 {
        self.hedges_counter(hop).get()
    }

    pub(crate) fn requests_counter(&self, hop: &str) -> Counter {
        counter(&self.requests, hop)
    }
    pub(crate) fn attempts_counter(&self, hop: &str) -> Counter {
        counter(&self.attempts, hop)
    }
    pub(crate) fn retries_counter(&self, hop: &str) -> Counter {
        counter(&self.retries, hop)
    }
    pub(crate) fn budget_exhausted_counter(&self, hop: &str) -> Counter {
        counter(&self.budget_exhausted, hop)
    }
    pub(crate) fn hedges_counter(&self, hop: &str) -> Counter {
        counter(&self.hedges, hop)
    }
}

/// The counter of one hop, looked up once when a layer is built (the hot path only
/// increments an atomic).
fn counter(family: &Family<HopLabels, Counter>, hop: &str) -> Counter {
    family
        .get_or_create(&HopLabels {
            hop: hop.to_string(),
        })
        .clone()
}

/// Counts calls into a hop's counter. [`CountLayer::requests`] goes outside the hedge and
/// retry layers (logical calls: amplification's denominator); [`CountLayer::attempts`]
/// inside the retry layer (every attempt sent).
#[derive(Clone, Debug)]
pub struct CountLayer {
    counter: Counter,
}

impl CountLayer {
    /// Logical calls to `hop` (`resilience_client_requests_total`).
    pub fn requests(hop: &str, metrics: &RetryMetrics) -> Self {
        Self {
            counter: metrics.requests_counter(hop),
        }
    }

    /// Attempts sent to `hop`, retries and hedges included (`resilience_client_attempts_total`).
    pub fn attempts(hop: &str, metrics: &RetryMetrics) -> Self {
        Self {
            counter: metrics.attempts_counter(hop),
        }
    }
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Count {
            inner,
            counter: self.counter.clone(),
        }
    }
}

/// See [`CountLayer`].
#[derive(Clone, Debug)]
pub struct Count<S> {
    inner: S,
    counter: Counter,
}

impl<S, Req> Service<Req> for Count<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.counter.inc();
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_a_hop_label() {
        let mut registry = Registry::default();
        let m = RetryMetrics::register(&mut registry);
        m.requests_counter("payments").inc();
        m.attempts_counter("payments").inc_by(3);
        m.retries_counter("payments").inc_by(2);
        m.budget_exhausted_counter("payments").inc();
        m.hedges_counter("inventory").inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "resilience_client_requests_total{hop=\"payments\"} 1",
            "resilience_client_attempts_total{hop=\"payments\"} 3",
            "resilience_retries_total{hop=\"payments\"} 2",
            "resilience_retry_budget_exhausted_total{hop=\"payments\"} 1",
            "resilience_hedges_total{hop=\"inventory\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert_eq!(m.attempts("payments"), 3);
        assert_eq!(m.clone().requests("payments"), 1, "clones share counters");
    }
}
