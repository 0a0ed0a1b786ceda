//! Per-try timeouts and end-to-end deadline propagation.
//!
//! # Why
//!
//! A caller that has given up no longer wants the answer, yet without deadlines every hop
//! behind it keeps working on the request: payments charges a card for an order the gateway
//! already reported as failed, a retry storm piles attempts on attempts nobody awaits. That
//! is *wasted work*, and under overload it is what keeps a system from recovering. gRPC's
//! answer is one absolute deadline per logical call, carried hop to hop as what is left of it
//! (`grpc-timeout`), so every hop can stop — or never start — work that can no longer be
//! useful. A per-try timeout adds a shorter bound per attempt, so one stuck attempt does not
//! eat the whole budget the retries need.
//!
//! # Pieces
//!
//! - [`ServerDeadlineLayer`] (server): reads the incoming `grpc-timeout`, fixes the absolute
//!   deadline at arrival and runs the handler inside [`scope`], so the handler's own
//!   downstream calls see it through [`current`]. With `enforce`, it refuses work whose
//!   deadline has already passed *before* doing it, and answers DEADLINE_EXCEEDED when the
//!   deadline passes mid-call (instead of tonic's CANCELLED, see below).
//! - [`ClientDeadlineLayer`] (client, outermost of the attempt layers): fixes the call's
//!   absolute deadline once — the earliest of the caller's own `grpc-timeout`, the incoming
//!   deadline ([`current`], when `propagate`) and `default_ms` — as the [`Deadline`] request
//!   extension that the retry, hedge and attempt layers read; refuses a call whose deadline
//!   already passed, and ends the whole call (retries and backoff included) when it passes.
//! - [`AttemptTimeoutLayer`] (client, innermost): one timer per attempt, the earlier of the
//!   per-try timeout and the call's deadline, and the outgoing `grpc-timeout` set to it on
//!   every attempt, so the callee sees the budget shrink across retries.
//!
//! # tonic's own timeout
//!
//! A tonic server *always* enforces the incoming `grpc-timeout` (with or without
//! `Server::timeout`): its `GrpcTimeout` wrapper sits outside every layer we add, and when
//! its timer fires it drops the handler and answers **CANCELLED** "Timeout expired" — a code
//! that says "the caller gave up", not "too slow", so clients and reports would misread it.
//! Our server timer fires [`SERVER_MARGIN`] (1 ms) before the deadline, so that with
//! `enforce` the caller gets DEADLINE_EXCEEDED; tonic's timer starts first (it is the outer
//! layer) and both tick on a 1 ms wheel, so firing at the deadline itself would lose the race.
//! The tonic *channel* enforces the outgoing header the same way on the client side; the
//! attempt timer starts before it and so fires first.
//!
//! The task-local deadline travels only within the handler's task: work a handler spawns
//! (`tokio::spawn`) must carry it itself (`scope(current(), fut)`), and a client stack must
//! not put a `tower::buffer::Buffer` (which calls on its own worker task) in front of
//! [`ClientDeadlineLayer`].

mod attempt;
mod client;
pub mod grpc_timeout;
mod server;

use std::future::Future;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::setting::ConfigError;

pub use attempt::{AttemptTimeout, AttemptTimeoutLayer};
pub use client::{ClientDeadline, ClientDeadlineLayer};
pub use grpc_timeout::{format_grpc_timeout, parse_grpc_timeout};
pub use server::{SERVER_MARGIN, ServerDeadline, ServerDeadlineLayer};

/// The longest timeout or deadline a profile may give (one hour): longer is a typo.
pub const MAX_MS: u64 = 3_600_000;

/// `timeout:` in a client policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Each attempt gets at most this long.
    pub per_try_ms: u64,
}

impl TimeoutConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_ms(self.per_try_ms, &format!("{key}.per_try_ms"))
    }
}

/// `deadline:` in a client policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Send what is left of the incoming deadline on outgoing calls.
    #[serde(default)]
    pub propagate: bool,
    /// Deadline for calls made without an incoming one.
    #[serde(default)]
    pub default_ms: Option<u64>,
}

impl DeadlineConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self.default_ms {
            Some(ms) => check_ms(ms, &format!("{key}.default_ms")),
            None => Ok(()),
        }
    }
}

/// `deadline:` in a server policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerDeadlineConfig {
    /// Refuse work whose deadline has already passed (DEADLINE_EXCEEDED) before doing it.
    #[serde(default)]
    pub enforce: bool,
}

impl ServerDeadlineConfig {
    /// Nothing to check (a flag), here so every config has the same shape.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

fn check_ms(ms: u64, key: &str) -> Result<(), ConfigError> {
    if ms == 0 {
        return Err(ConfigError::new(key, "must be at least 1 ms, got 0"));
    }
    if ms > MAX_MS {
        return Err(ConfigError::new(
            key,
            format!("must be at most {MAX_MS} ms (one hour), got {ms}"),
        ));
    }
    Ok(())
}

/// The deadline passed before the call could be made (or completed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("deadline exceeded: {0}")]
pub struct DeadlineExceeded(pub String);

/// The absolute deadline of an outgoing call, as a request extension. The client deadline
/// layer (outermost) inserts it; the retry policy and the per-attempt timeout read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// Time left, zero once passed.
    pub fn remaining(&self) -> std::time::Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

tokio::task_local! {
    /// The deadline of the incoming call the current task is serving.
    static INCOMING: Option<Instant>;
}

/// Runs `fut` with `deadline` as the incoming deadline that [`current`] returns inside it.
/// The server deadline layer wraps every handler in it; a handler that spawns work on
/// another task can wrap that work too (`scope(current(), work)`).
pub async fn scope<F: Future>(deadline: Option<Instant>, fut: F) -> F::Output {
    INCOMING.scope(deadline, fut).await
}

/// The incoming deadline of the call this task is serving; `None` outside a [`scope`] or
/// when the caller set no deadline.
pub fn current() -> Option<Instant> {
    INCOMING.try_with(|d| *d).ok().flatten()
}

/// Time left until the incoming deadline ([`current`]), zero once passed. Lets a handler skip
/// work it could only finish too late (after waiting in a queue, say).
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// Whether `err` is (or was caused by) a [`DeadlineExceeded`].
pub fn is_deadline_exceeded(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<DeadlineExceeded>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    side: &'static str,
}

const SERVER: SideLabels = SideLabels { side: "server" };
const CLIENT: SideLabels = SideLabels { side: "client" };

/// `resilience_deadline_exceeded_total{side="server"|"client"}`: calls refused or ended
/// because their deadline passed. One per process, shared by the server and client layers.
#[derive(Clone, Debug, Default)]
pub struct DeadlineMetrics {
    exceeded: Family<SideLabels, Counter>,
}

impl DeadlineMetrics {
    pub fn register(registry: &mut Registry) -> DeadlineMetrics {
        let m = DeadlineMetrics::default();
        registry.register(
            crate::metric_names::DEADLINE_EXCEEDED,
            "Calls refused or ended because their deadline passed (server: incoming work; client: outgoing calls)",
            m.exceeded.clone(),
        );
        m
    }

    /// Deadline exceeded so far on the server side (incoming calls).
    pub fn server(&self) -> u64 {
        self.exceeded.get_or_create(&SERVER).get()
    }

    /// Deadline exceeded so far on the client side (outgoing calls).
    pub fn client(&self) -> u64 {
        self.exceeded.get_or_create(&CLIENT).get()
    }

    /// `{"server": n, "client": n}` for `/state`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "server": self.server(), "client": self.client() })
    }

    fn server_exceeded(&self) {
        self.exceeded.get_or_create(&SERVER).inc();
    }

    fn client_exceeded(&self) {
        self.exceeded.get_or_create(&CLIENT).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_must_be_positive_and_sane() {
        let err = TimeoutConfig { per_try_ms: 0 }
            .validate("resilience.client.timeout")
            .unwrap_err();
        assert_eq!(err.key, "resilience.client.timeout.per_try_ms");
        assert!(err.message.contains("got 0"), "{err}");
        let err = TimeoutConfig {
            per_try_ms: 7_200_000,
        }
        .validate("t")
        .unwrap_err();
        assert_eq!(err.key, "t.per_try_ms");
        assert!(err.message.contains("7200000"), "{err}");
        TimeoutConfig { per_try_ms: 500 }.validate("t").unwrap();
    }

    #[test]
    fn default_deadline_is_checked_when_set() {
        let d = DeadlineConfig {
            propagate: true,
            default_ms: Some(0),
        };
        let err = d.validate("resilience.hops.payments.deadline").unwrap_err();
        assert_eq!(err.key, "resilience.hops.payments.deadline.default_ms");
        assert!(err.to_string().contains("got 0"), "{err}");
        DeadlineConfig::default().validate("d").unwrap();
        DeadlineConfig {
            propagate: false,
            default_ms: Some(1000),
        }
        .validate("d")
        .unwrap();
        ServerDeadlineConfig { enforce: true }
            .validate("s")
            .unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<DeadlineConfig>(r#"{"propagte": true}"#).unwrap_err();
        assert!(err.to_string().contains("propagte"), "{err}");
    }

    #[tokio::test]
    async fn current_is_the_scoped_deadline() {
        assert_eq!(current(), None);
        let at = Instant::now() + Duration::from_secs(1);
        let seen = scope(Some(at), async { current() }).await;
        assert_eq!(seen, Some(at));
        assert_eq!(scope(None, async { current() }).await, None);
        assert_eq!(current(), None);
    }
}
