//! Budgeted hedging of idempotent reads (profile g).
//!
//! # Why
//!
//! In a fan-out system the slowest of many calls sets the latency; a few slow servers
//! (GC, a hot lock, a noisy neighbour) make the tail. Hedging sends a second copy of a read
//! that has not answered after a short delay and takes whichever answer comes first
//! (Dean & Barroso, "The Tail at Scale", CACM 2013): a small amount of extra work removes
//! most of the tail.
//!
//! # Why budgeted, and only for listed reads
//!
//! A hedge is extra load sent *because the server is slow* — and a server is slow most often
//! because it is overloaded. Unbounded, hedging doubles the load of a browning-out server and
//! keeps it overloaded after the trigger has passed: the same metastable feedback loop as
//! retry storms (see [`crate::retry`]). So every hedge withdraws from the hop's
//! [`RetryBudget`], shared with its retries: with no balance there is no hedge. And only
//! methods listed in `methods` are hedged — idempotent reads, where two executions are
//! harmless; anything else passes straight through.
//!
//! # How
//!
//! For a listed method: the call is sent; if no answer has come after `delay_ms`, a copy is
//! sent (budget permitting), and so on every `delay_ms` up to `max_extra` copies. The first
//! answer that is not a server failure ([`classify::is_server_failure`]: OK, or a code a
//! healthy server gives, such as NOT_FOUND) wins and the other attempts are dropped, which
//! cancels them (tonic resets their HTTP/2 streams). A failure is only returned when no
//! other attempt is still running: it is then the last answer. A failure that comes before
//! `delay_ms` is returned at once — re-sending after a failure is the retry layer's job.
//! Copies carry `grpc-previous-rpc-attempts` (gRFC A6).
//!
//! tower has a `Hedge` middleware, but it derives its delay from a latency percentile
//! measured over a rotating histogram and hedges nothing until it has data points; the
//! profile's `delay_ms` is a fixed delay, which keeps the seeded experiments reproducible and
//! comparable. So this is a small service of its own, built on tower's `Oneshot` and the
//! shared budget.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, Either};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::{FutureExt, TryFutureExt};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service, ServiceExt};

use crate::BoxError;
use crate::body::{ReplayBody, clone_request};
use crate::classify;
use crate::deadline::Deadline;
use crate::retry::{PREVIOUS_RPC_ATTEMPTS, RetryBudget, RetryMetrics};
use crate::setting::ConfigError;

/// `hedge:` in a client policy. Applies to the methods named in `methods` (reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// Send a second attempt when the first has not answered after this long.
    pub delay_ms: u64,
    /// Extra attempts at most.
    #[serde(default = "default_max_extra")]
    pub max_extra: u32,
    /// Full gRPC method paths that are safe to hedge (idempotent reads).
    #[serde(default)]
    pub methods: Vec<String>,
}

fn default_max_extra() -> u32 {
    1
}

/// `max_extra` may not exceed this.
pub const MAX_EXTRA: u32 = 4;

impl HedgeConfig {
    /// Checks every value; the error names the key under `key` (`resilience.client.hedge`)
    /// and shows the value.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.delay_ms < 1 {
            return Err(ConfigError::new(
                format!("{key}.delay_ms"),
                format!(
                    "must be at least 1 (a hedge at 0 ms doubles every call), got {}",
                    self.delay_ms
                ),
            ));
        }
        if !(1..=MAX_EXTRA).contains(&self.max_extra) {
            return Err(ConfigError::new(
                format!("{key}.max_extra"),
                format!("must be between 1 and {MAX_EXTRA}, got {}", self.max_extra),
            ));
        }
        if self.methods.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.methods"),
                "is empty, so nothing would be hedged; list the idempotent reads (e.g. /shop.v1.Inventory/GetStock) or remove the hedge block",
            ));
        }
        for (i, method) in self.methods.iter().enumerate() {
            if !is_method_path(method) {
                return Err(ConfigError::new(
                    format!("{key}.methods[{i}]"),
                    format!(
                        "must be a full gRPC method path like /pkg.Service/Method, got {method:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `/package.Service/Method`: a dotted service name and a method name, nothing else.
fn is_method_path(path: &str) -> bool {
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    let Some((service, method)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    service.contains('.') && service.split('.').all(ident) && ident(method)
}

/// Hedges the listed reads of one hop; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct HedgeLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    hop: String,
    delay: Duration,
    max_extra: u32,
    methods: HashSet<String>,
    budget: Option<Arc<RetryBudget>>,
    hedges: Counter,
    budget_exhausted: Counter,
}

impl HedgeLayer {
    /// The hedge layer of `hop`, with the hop's shared budget (the same `Arc` as its
    /// [`RetryLayer`](crate::retry::RetryLayer)); `None`: hedges are not budgeted.
    pub fn new(
        hop: &str,
        config: &HedgeConfig,
        budget: Option<Arc<RetryBudget>>,
        metrics: &RetryMetrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                hop: hop.to_string(),
                delay: Duration::from_millis(config.delay_ms),
                max_extra: config.max_extra,
                methods: config.methods.iter().cloned().collect(),
                budget,
                hedges: metrics.hedges_counter(hop),
                budget_exhausted: metrics.budget_exhausted_counter(hop),
            }),
        }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See [`HedgeLayer`].
#[derive(Clone, Debug)]
pub struct Hedge<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> Service<http::Request<ReplayBody>> for Hedge<S>
where
    S: Service<http::Request<ReplayBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<ReplayBody>) -> Self::Future {
        if let Some(budget) = &self.shared.budget {
            budget.deposit_once(&mut req);
        }
        if !self.shared.methods.contains(req.uri().path()) {
            return self.inner.call(req).err_into().boxed();
        }
        let copy = clone_request(&req);
        let first = self.inner.call(req);
        hedged(first, self.inner.clone(), copy, Arc::clone(&self.shared)).boxed()
    }
}

/// Runs the first attempt and the hedges; see the module docs for the rules.
async fn hedged<S, B>(
    first: S::Future,
    service: S,
    req: http::Request<ReplayBody>,
    shared: Arc<Shared>,
) -> Result<http::Response<B>, BoxError>
where
    S: Service<http::Request<ReplayBody>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    let mut in_flight = FuturesUnordered::new();
    in_flight.push(Either::Left(first));
    let mut extra = 0;
    let mut hedging = shared.max_extra > 0;
    let timer = tokio::time::sleep(shared.delay);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            // Answers first: one that is ready wins over a hedge due at the same instant.
            biased;
            Some(result) = in_flight.next() => {
                let result: Result<http::Response<B>, BoxError> = result.map_err(Into::into);
                if in_flight.is_empty() || !classify::is_server_failure(classify::code_of(&result)) {
                    // Dropping `in_flight` cancels the attempts still running.
                    return result;
                }
            }
            () = &mut timer, if hedging => {
                if req.extensions().get::<Deadline>().is_some_and(|d| d.remaining().is_zero()) {
                    hedging = false;
                    continue;
                }
                if let Some(budget) = &shared.budget && !budget.withdraw() {
                    shared.budget_exhausted.inc();
                    tracing::debug!(hop = %shared.hop, "not hedging: retry budget exhausted");
                    hedging = false;
                    continue;
                }
                extra += 1;
                let mut copy = clone_request(&req);
                copy.headers_mut().insert(PREVIOUS_RPC_ATTEMPTS, extra.into());
                in_flight.push(Either::Right(service.clone().oneshot(copy)));
                shared.hedges.inc();
                tracing::debug!(hop = %shared.hop, extra, path = req.uri().path(), "hedging");
                if extra >= shared.max_extra {
                    hedging = false;
                } else {
                    timer.as_mut().reset(tokio::time::Instant::now() + shared.delay);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HedgeConfig {
        HedgeConfig {
            delay_ms: 50,
            max_extra: 1,
            methods: vec!["/shop.v1.Inventory/GetStock".into()],
        }
    }

    #[test]
    fn valid_config() {
        config().validate("k").unwrap();
    }

    #[test]
    fn values_are_named_with_their_key() {
        let key = "resilience.hops.inventory.hedge";
        let e = HedgeConfig {
            delay_ms: 0,
            ..config()
        }
        .validate(key)
        .unwrap_err();
        assert_eq!(e.key, format!("{key}.delay_ms"));
        assert!(e.message.contains("got 0"), "{e}");

        for bad in [0, MAX_EXTRA + 1] {
            let e = HedgeConfig {
                max_extra: bad,
                ..config()
            }
            .validate(key)
            .unwrap_err();
            assert_eq!(e.key, format!("{key}.max_extra"));
            assert!(e.message.contains(&format!("got {bad}")), "{e}");
        }

        let e = HedgeConfig {
            methods: vec![],
            ..config()
        }
        .validate(key)
        .unwrap_err();
        assert_eq!(e.key, format!("{key}.methods"));
    }

    #[test]
    fn methods_must_be_full_paths() {
        for good in [
            "/shop.v1.Inventory/GetStock",
            "/a.B/C",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(is_method_path(good), "{good}");
        }
        for bad in [
            "shop.v1.Inventory/GetStock",
            "/Inventory/GetStock",
            "/shop.v1.Inventory",
            "/shop.v1.Inventory/",
            "/shop.v1.Inventory/Get/Stock",
            "/shop..Inventory/GetStock",
            "/shop.v1.Inventory/Get Stock",
            "",
        ] {
            assert!(!is_method_path(bad), "{bad}");
        }
        let e = HedgeConfig {
            methods: vec!["/shop.v1.Inventory/GetStock".into(), "GetStock".into()],
            ..config()
        }
        .validate("h")
        .unwrap_err();
        assert_eq!(e.key, "h.methods[1]");
        assert!(e.message.contains("\"GetStock\""), "{e}");
    }
}
