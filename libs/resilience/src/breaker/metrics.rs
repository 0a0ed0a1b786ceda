//! The breaker's Prometheus families, labelled by `hop`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabels {
    hop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    hop: String,
    from: &'static str,
    to: &'static str,
}

/// The breaker metric families; create them once per process (or registry) with
/// [`BreakerMetrics::register`] and hand the same value (it is a cheap clone) to every
/// [`Breaker`](super::Breaker). `Default` gives families registered nowhere (tests,
/// benchmarks).
///
/// - `resilience_breaker_transitions_total{hop,from,to}`: state changes;
/// - `resilience_breaker_state{hop}`: 0 closed, 1 open, 2 half_open;
/// - `resilience_breaker_rejections_total{hop}`: calls refused without being sent.
#[derive(Clone, Debug, Default)]
pub struct BreakerMetrics {
    transitions: Family<TransitionLabels, Counter>,
    state: Family<HopLabels, Gauge>,
    rejections: Family<HopLabels, Counter>,
}

impl BreakerMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> BreakerMetrics {
        let metrics = BreakerMetrics::default();
        registry.register(
            crate::metric_names::BREAKER_TRANSITIONS,
            "Circuit breaker state changes, by downstream hop",
            metrics.transitions.clone(),
        );
        registry.register(
            crate::metric_names::BREAKER_STATE,
            "Circuit breaker state by downstream hop: 0 closed, 1 open, 2 half_open",
            metrics.state.clone(),
        );
        registry.register(
            crate::metric_names::BREAKER_REJECTIONS,
            "Calls the circuit breaker refused without sending them, by downstream hop",
            metrics.rejections.clone(),
        );
        metrics
    }

    /// One breaker's series, looked up once so that the hot path touches no family lock.
    /// Every series is created (at zero) up front, so dashboards see it before the first
    /// transition.
    pub(super) fn handles(&self, hop: &str) -> Handles {
        let transition = |t: Transition| {
            self.transitions.get_or_create_owned(&TransitionLabels {
                hop: hop.to_owned(),
                from: t.from().name(),
                to: t.to().name(),
            })
        };
        let labels = HopLabels {
            hop: hop.to_owned(),
        };
        let state = self.state.get_or_create_owned(&labels);
        state.set(StateKind::Closed.gauge());
        Handles {
            transitions: Transition::ALL.map(transition),
            state,
            rejections: self.rejections.get_or_create_owned(&labels),
        }
    }
}

/// The three states, as named in logs, metrics and the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StateKind {
    Closed,
    Open,
    HalfOpen,
}

impl StateKind {
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Closed => "closed",
            StateKind::Open => "open",
            StateKind::HalfOpen => "half_open",
        }
    }

    /// The value of `resilience_breaker_state` (and of the low bits of the state word).
    pub fn gauge(self) -> i64 {
        match self {
            StateKind::Closed => 0,
            StateKind::Open => 1,
            StateKind::HalfOpen => 2,
        }
    }
}

/// The four transitions the state machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    /// CLOSED -> OPEN.
    Trip,
    /// OPEN -> HALF_OPEN.
    Probe,
    /// HALF_OPEN -> OPEN.
    Reopen,
    /// HALF_OPEN -> CLOSED.
    Close,
}

impl Transition {
    const ALL: [Transition; 4] = [
        Transition::Trip,
        Transition::Probe,
        Transition::Reopen,
        Transition::Close,
    ];

    pub fn from(self) -> StateKind {
        match self {
            Transition::Trip => StateKind::Closed,
            Transition::Probe => StateKind::Open,
            Transition::Reopen | Transition::Close => StateKind::HalfOpen,
        }
    }

    pub fn to(self) -> StateKind {
        match self {
            Transition::Trip | Transition::Reopen => StateKind::Open,
            Transition::Probe => StateKind::HalfOpen,
            Transition::Close => StateKind::Closed,
        }
    }
}

/// One breaker's series.
#[derive(Debug)]
pub(super) struct Handles {
    transitions: [Counter; 4],
    state: Gauge,
    rejections: Counter,
}

impl Handles {
    pub fn transition(&self, t: Transition) {
        self.transitions[t as usize].inc();
        self.state.set(t.to().gauge());
    }

    pub fn rejection(&self) {
        self.rejections.inc();
    }
}
