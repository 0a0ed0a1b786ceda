//! The client and server stacks a profile describes, in one place each, with the reason for
//! every layer's position.
//!
//! Client, outermost first (one per downstream hop):
//!
//! 1. `StatusLayer` — every error leaves as a deliberate gRPC `Status` (never UNKNOWN).
//! 2. `KeyLayer` (idempotency on) — one key per logical call, outside retries so every
//!    attempt carries the same key.
//! 3. `ClientDeadlineLayer` — fixes the call's absolute deadline once (incoming deadline,
//!    caller's timeout, profile default); refuses a call whose deadline already passed.
//! 4. `BufferLayer` — makes the request replayable for retries and hedges.
//! 5. `CountLayer::requests` — counts logical calls (first attempts): amplification's denominator.
//! 6. `HedgeLayer` (reads listed in the profile) — outside retry: a hedge is a whole extra call.
//! 7. `RetryLayer` — decides retries from the outcome, backoff, pushback, budget, deadline.
//! 8. `CountLayer::attempts` — counts every attempt sent.
//! 9. breaker — inside retry, so each attempt is an observation and an open circuit fails
//!    attempts fast (the retry layer does not retry `CircuitOpen`).
//! 10. bulkhead — inside the breaker: a call refused by the breaker takes no place.
//! 11. `AttemptTimeoutLayer` — per-attempt timer and the outgoing `grpc-timeout` (what is left).
//! 12. `UnbufferLayer` — back to tonic's body type for the channel.
//!
//! The `inner` service is the channel; lab-runtime wraps it in its client trace service
//! (`lab_runtime::telemetry::grpc::ClientTrace`) when traces are exported, so each attempt
//! a retry or hedge sends gets a span and a `traceparent` of its own.
//!
//! Server, outermost first (after the runtime's request counter, which counts every arrival):
//! `StatusLayer`; shed (cheapest refusal first); the server deadline (refuse expired work;
//! make the deadline visible to the handler's own downstream calls); the adaptive limit
//! (around real work only, so its RTT samples are the handler's); the incoming idempotency
//! key (visible to downstream calls).
//!
//! `frlab profile show` prints what the builders below do: [`describe_client`] and
//! [`describe_server`] run the same builder functions around a service that is never
//! called, and each layer notes its line as it is added ([`Notes`]). A layer added,
//! removed or moved in a builder shows in the description in the same place.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tower::ServiceBuilder;
use tower::util::{BoxCloneService, BoxCloneSyncService};

use crate::adaptive::{AdaptiveConfig, AdaptiveLimit, AdaptiveMetrics};
use crate::body::{BufferLayer, UnbufferLayer};
use crate::breaker::{Breaker, BreakerConfig, BreakerMetrics};
use crate::bulkhead::{Bulkhead, BulkheadConfig, BulkheadMetrics};
use crate::config::{Profile, ServerPolicy};
use crate::deadline::{
    AttemptTimeoutLayer, ClientDeadlineLayer, DeadlineConfig, DeadlineMetrics,
    ServerDeadlineConfig, ServerDeadlineLayer, TimeoutConfig,
};
use crate::hedge::{HedgeConfig, HedgeLayer};
use crate::idempotency::{IncomingKeyLayer, KeyLayer};
use crate::retry::{
    BackoffKind, CountLayer, Jitter, RetryBudget, RetryConfig, RetryLayer, RetryMetrics,
};
use crate::shed::{ShedConfig, ShedMetrics, Shedder};
use crate::status::StatusLayer;
use crate::{BoxError, GrpcRequest, GrpcResponse};

/// One line per layer of the client stack for `hop`, outermost first (for `frlab profile
/// show`): the notes [`client_stack`]'s builder takes as it adds each layer.
pub fn describe_client(profile: &Profile, hop: &str) -> Vec<String> {
    let metrics = Metrics::register(&mut Registry::default());
    let mut notes = Notes::recording();
    build_client(profile, hop, &metrics, never_called(), &mut notes);
    notes.lines()
}

/// One line per layer of `service`'s server stack, outermost first: the notes
/// [`ServerStack`]'s builder takes as it adds each layer.
pub fn describe_server(profile: &Profile, service: &str) -> Vec<String> {
    let metrics = Metrics::register(&mut Registry::default());
    let mut notes = Notes::recording();
    ServerStack::new(profile, service, &metrics).build(never_called(), &mut notes);
    notes.lines()
}

/// The inner service of a stack built only to be described.
fn never_called() -> impl tower::Service<
    GrpcRequest,
    Response = GrpcResponse,
    Error = BoxError,
    Future = impl Future<Output = Result<GrpcResponse, BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_: GrpcRequest| async {
        Err::<GrpcResponse, BoxError>("a stack built to be described is never called".into())
    })
}

/// What a builder says about each layer as it adds it (nothing unless recording).
struct Notes(Option<Vec<String>>);

impl Notes {
    fn quiet() -> Self {
        Notes(None)
    }

    fn recording() -> Self {
        Notes(Some(Vec::new()))
    }

    /// Passes `layer` through, noting `line()` first (a layer with nothing to say: `None`).
    fn note<L>(&mut self, line: impl FnOnce() -> Option<String>, layer: L) -> L {
        if let Some(lines) = &mut self.0 {
            lines.extend(line());
        }
        layer
    }

    fn lines(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}

fn key_line() -> String {
    "idempotency key (one per logical call, forwarded across hops)".to_string()
}

fn deadline_line(d: &DeadlineConfig) -> String {
    match (d.propagate, d.default_ms) {
        (false, None) => "deadline: only the caller's own, not propagated".into(),
        (propagate, default) => format!(
            "deadline: {}{}",
            if propagate {
                "propagated from the incoming call"
            } else {
                "not propagated"
            },
            default.map_or(String::new(), |ms| format!(
                ", {ms} ms when the caller sets none"
            ))
        ),
    }
}

fn hedge_line(h: &HedgeConfig) -> String {
    format!(
        "hedge: up to {} extra after {} ms, for {}",
        h.max_extra,
        h.delay_ms,
        h.methods.join(", ")
    )
}

fn retry_line(r: &RetryConfig) -> String {
    if r.max_attempts <= 1 {
        return "retry: off (1 attempt)".into();
    }
    let backoff = match r.backoff.kind {
        BackoffKind::None => "no backoff".to_string(),
        BackoffKind::Fixed => format!("fixed {} ms", r.backoff.base_ms),
        BackoffKind::Exponential => {
            format!("exponential {}..{} ms", r.backoff.base_ms, r.backoff.max_ms)
        }
    };
    let jitter = match r.backoff.jitter {
        Jitter::None => "",
        Jitter::Full => " + full jitter",
        Jitter::Decorrelated => " + decorrelated jitter",
    };
    let codes: Vec<String> = r.retry_on.iter().map(|c| c.to_string()).collect();
    let budget = r.budget.as_ref().map_or(String::new(), |b| {
        format!(", budget {:.0} % + {}/s", b.ratio * 100.0, b.min_per_second)
    });
    format!(
        "retry: {} attempts, {backoff}{jitter}, on {}{}{budget}",
        r.max_attempts,
        codes.join("|"),
        if r.honor_pushback {
            ", honours pushback"
        } else {
            ""
        },
    )
}

fn breaker_line(b: Option<&BreakerConfig>) -> String {
    let Some(b) = b else {
        return "circuit breaker: off".into();
    };
    let mut trips = Vec::new();
    if let Some(n) = b.consecutive_failures {
        trips.push(format!("{n} failures in a row"));
    }
    if let Some(r) = b.failure_rate {
        trips.push(format!("{:.0} % failures", r * 100.0));
    }
    if let Some(r) = b.slow_call_rate {
        trips.push(format!(
            "{:.0} % slower than {} ms",
            r * 100.0,
            b.slow_call_ms
        ));
    }
    format!(
        "circuit breaker: trips on {} (rates over {} ms, {}+ calls); open {} ms; {} half-open probes",
        trips.join(" or "),
        b.window_ms,
        b.min_calls,
        b.open_ms,
        b.half_open_probes
    )
}

fn bulkhead_line(b: Option<&BulkheadConfig>) -> String {
    match b {
        None => "bulkhead: off".into(),
        Some(b) => format!(
            "bulkhead: {} in flight, wait at most {} ms",
            b.max_concurrent, b.max_wait_ms
        ),
    }
}

fn timeout_line(t: Option<&TimeoutConfig>) -> String {
    match t {
        None => "per-try timeout: off".into(),
        Some(t) => format!("per-try timeout: {} ms", t.per_try_ms),
    }
}

fn shed_line(s: &ShedConfig) -> String {
    format!(
        "load shedding: {} in flight{}",
        s.max_in_flight,
        s.pushback_ms
            .map_or(String::new(), |ms| format!(", pushback {ms} ms"))
    )
}

fn server_deadline_line(d: &ServerDeadlineConfig) -> String {
    if d.enforce {
        "deadline: refuse work whose deadline passed".to_string()
    } else {
        "deadline: not enforced".to_string()
    }
}

fn adaptive_line(a: &AdaptiveConfig) -> String {
    format!(
        "adaptive concurrency limit: {}..{} (start {}){}",
        a.min_limit,
        a.max_limit,
        a.initial_limit,
        a.pushback_ms
            .map_or(String::new(), |ms| format!(", pushback {ms} ms"))
    )
}

/// A downstream hop's client, as generated tonic clients take it. Its error is a `Status`.
pub type HopService = BoxCloneSyncService<GrpcRequest, GrpcResponse, tonic::Status>;

/// The metric families of every pattern, registered once per service (labelled by hop).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub retry: RetryMetrics,
    pub breaker: BreakerMetrics,
    pub bulkhead: BulkheadMetrics,
    pub deadline: DeadlineMetrics,
    pub shed: ShedMetrics,
    pub adaptive: AdaptiveMetrics,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            retry: RetryMetrics::register(registry),
            breaker: BreakerMetrics::register(registry),
            bulkhead: BulkheadMetrics::register(registry),
            deadline: DeadlineMetrics::register(registry),
            shed: ShedMetrics::register(registry),
            adaptive: AdaptiveMetrics::register(registry),
        }
    }
}

/// A hop's client stack and the handles its `/state` entry reads.
pub struct ClientStack {
    pub service: HopService,
    pub breaker: Option<Breaker>,
    pub bulkhead: Option<Bulkhead>,
    /// JSON view of the hop's breaker and bulkhead, for `/state`.
    pub state: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// Builds the client stack of `hop` described by `profile` around `inner` (a tonic Channel),
/// in the order given in the module docs.
pub fn client_stack<S>(profile: &Profile, hop: &str, metrics: &Metrics, inner: S) -> ClientStack
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    build_client(profile, hop, metrics, inner, &mut Notes::quiet())
}

/// [`client_stack`], noting each layer as it is added (see [`describe_client`]).
fn build_client<S>(
    profile: &Profile,
    hop: &str,
    metrics: &Metrics,
    inner: S,
    notes: &mut Notes,
) -> ClientStack
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let policy = profile.client_for(hop);
    let budget = RetryBudget::for_hop(&policy.retry);
    let breaker = policy
        .breaker
        .as_ref()
        .map(|c| Breaker::new(hop, c, &metrics.breaker));
    let bulkhead = policy
        .bulkhead
        .as_ref()
        .map(|c| Bulkhead::new(hop, c, &metrics.bulkhead));
    let service = ServiceBuilder::new()
        .layer(StatusLayer)
        .option_layer(notes.note(
            || profile.idempotency.enabled.then(key_line),
            profile.idempotency.enabled.then_some(KeyLayer),
        ))
        .layer(notes.note(
            || Some(deadline_line(&policy.deadline)),
            ClientDeadlineLayer::new(&policy.deadline, &metrics.deadline),
        ))
        .layer(BufferLayer::new())
        .layer(CountLayer::requests(hop, &metrics.retry))
        .option_layer(
            notes.note(
                || policy.hedge.as_ref().map(hedge_line),
                policy
                    .hedge
                    .as_ref()
                    .map(|h| HedgeLayer::new(hop, h, budget.clone(), &metrics.retry)),
            ),
        )
        .layer(notes.note(
            || Some(retry_line(&policy.retry)),
            RetryLayer::new(hop, &policy.retry, budget, &metrics.retry),
        ))
        .layer(CountLayer::attempts(hop, &metrics.retry))
        .option_layer(notes.note(
            || Some(breaker_line(policy.breaker.as_ref())),
            breaker.as_ref().map(Breaker::layer),
        ))
        .option_layer(notes.note(
            || Some(bulkhead_line(policy.bulkhead.as_ref())),
            bulkhead.as_ref().map(Bulkhead::layer),
        ))
        .layer(notes.note(
            || Some(timeout_line(policy.timeout.as_ref())),
            AttemptTimeoutLayer::new(policy.timeout.as_ref()),
        ))
        .layer(UnbufferLayer::new())
        .map_err(Into::<BoxError>::into)
        .service(inner);
    let (b, h) = (breaker.clone(), bulkhead.clone());
    ClientStack {
        service: BoxCloneSyncService::new(service),
        breaker,
        bulkhead,
        state: Arc::new(move || {
            serde_json::json!({
                "breaker": b.as_ref().map(Breaker::snapshot),
                "bulkhead": h.as_ref().map(Bulkhead::snapshot),
            })
        }),
    }
}

/// The server stack of `service` described by `profile`, as one tower layer. Clones share
/// the shedder and the adaptive limit, so the `/state` view and the layer agree.
#[derive(Clone)]
pub struct ServerStack {
    policy: ServerPolicy,
    deadline: ServerDeadlineLayer,
    shed: Option<Shedder>,
    adaptive: Option<AdaptiveLimit>,
}

impl ServerStack {
    pub fn new(profile: &Profile, service: &str, metrics: &Metrics) -> Self {
        let policy = profile.server_for(service);
        Self {
            policy: policy.clone(),
            deadline: ServerDeadlineLayer::new(&policy.deadline, &metrics.deadline),
            shed: policy.shed.as_ref().map(|c| Shedder::new(c, &metrics.shed)),
            adaptive: policy
                .adaptive
                .as_ref()
                .map(|c| AdaptiveLimit::new(c, &metrics.adaptive)),
        }
    }

    /// JSON view of the server-side patterns, for `/state`.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "deadline": self.deadline.snapshot(),
            "shed": self.shed.as_ref().map(Shedder::snapshot),
            "adaptive": self.adaptive.as_ref().map(AdaptiveLimit::snapshot),
        })
    }
}

/// The type a server stack turns the routes into.
pub type ServerService = BoxCloneService<GrpcRequest, GrpcResponse, tonic::Status>;

impl<S> tower::Layer<S> for ServerStack
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Service = ServerService;

    fn layer(&self, inner: S) -> Self::Service {
        self.build(inner, &mut Notes::quiet())
    }
}

impl ServerStack {
    /// The layers around `inner`, in the order of the module docs, noting each (see
    /// [`describe_server`]).
    fn build<S>(&self, inner: S, notes: &mut Notes) -> ServerService
    where
        S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let p = &self.policy;
        let service = ServiceBuilder::new()
            .layer(StatusLayer)
            .option_layer(notes.note(
                || p.shed.as_ref().map(shed_line),
                self.shed.as_ref().map(Shedder::layer),
            ))
            .layer(notes.note(
                || Some(server_deadline_line(&p.deadline)),
                self.deadline.clone(),
            ))
            .option_layer(notes.note(
                || p.adaptive.as_ref().map(adaptive_line),
                self.adaptive.as_ref().map(AdaptiveLimit::layer),
            ))
            .layer(IncomingKeyLayer)
            .map_err(Into::<BoxError>::into)
            .service(inner);
        BoxCloneService::new(service)
    }
}
