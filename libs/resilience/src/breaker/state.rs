//! The state machine, shared by every clone of a breaker's services.
//!
//! Two views of one state: the *state word*, an atomic that the fast paths read (admission
//! while CLOSED, refusal while OPEN, recording outcomes while CLOSED), and [`Machine`] under
//! a mutex, which every transition and all HALF_OPEN bookkeeping go through. Transitions
//! happen only under the mutex, which stores the word last; the word packs the state with an
//! *epoch* that every transition increments, so an outcome can tell whether the state that
//! admitted its call is still the current one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use super::BreakerConfig;
use super::metrics::{Handles, StateKind, Transition};
use super::window::Window;
use crate::setting::CodeName;

const NANOS_PER_MS: u64 = 1_000_000;

/// What a call was admitted as; its outcome is reported with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ticket {
    /// A normal call, admitted while CLOSED in `epoch`.
    Closed { epoch: u64 },
    /// Probe `id` of the HALF_OPEN state of `epoch`.
    Probe { epoch: u64, id: u64 },
}

/// How a call ended, as the breaker judges it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome {
    pub code: Code,
    pub started: Instant,
    pub ended: Instant,
}

/// The breaker's settings, from [`BreakerConfig`], in the units the code uses.
#[derive(Debug)]
struct Settings {
    consecutive_failures: Option<u32>,
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    slow_call: Duration,
    min_calls: u64,
    open_nanos: u64,
    /// `(multiplier, max_nanos)`.
    open_backoff: Option<(f64, u64)>,
    half_open_probes: u32,
    probe_timeout_nanos: u64,
}

impl Settings {
    /// Clamps what `validate` would reject to the nearest valid value, so that a breaker
    /// built from an unvalidated config still behaves.
    fn new(c: &BreakerConfig) -> Self {
        let rate = |r: Option<f64>| {
            r.map(|r| {
                if r.is_nan() {
                    1.0
                } else {
                    r.clamp(f64::MIN_POSITIVE, 1.0)
                }
            })
        };
        let open_ms = c.open_ms.max(1);
        Settings {
            consecutive_failures: c.consecutive_failures.map(|n| n.max(1)),
            failure_rate: rate(c.failure_rate),
            slow_call_rate: rate(c.slow_call_rate),
            slow_call: Duration::from_millis(c.slow_call_ms.max(1)),
            min_calls: u64::from(c.min_calls.max(1)),
            open_nanos: open_ms.saturating_mul(NANOS_PER_MS),
            open_backoff: c.open_backoff.as_ref().map(|b| {
                let multiplier = if b.multiplier.is_finite() {
                    b.multiplier.max(1.0)
                } else {
                    1.0
                };
                (
                    multiplier,
                    b.max_ms.max(open_ms).saturating_mul(NANOS_PER_MS),
                )
            }),
            half_open_probes: c.half_open_probes.max(1),
            probe_timeout_nanos: c.probe_timeout_ms.max(1).saturating_mul(NANOS_PER_MS),
        }
    }

    /// How long the breaker stays open after `reopen_count` re-opens in a row.
    fn open_nanos(&self, reopen_count: u32) -> u64 {
        match self.open_backoff {
            None => self.open_nanos,
            Some((multiplier, max)) => {
                let exponent = i32::try_from(reopen_count).unwrap_or(i32::MAX);
                let scaled = self.open_nanos as f64 * multiplier.powi(exponent);
                // `as` saturates; `min` keeps the cap exact.
                (scaled.min(max as f64) as u64).min(max)
            }
        }
    }

    fn is_slow(&self, outcome: &Outcome) -> bool {
        outcome.ended.saturating_duration_since(outcome.started) > self.slow_call
    }
}

/// A probe out in HALF_OPEN.
#[derive(Debug, Clone, Copy)]
struct Probe {
    id: u64,
    /// When its permit expires (nanos since `base`).
    expires: u64,
}

/// The states. Times are nanoseconds since the breaker's creation (`Shared::base`).
#[derive(Debug)]
enum State {
    /// Calls go through; outcomes are counted (in the atomics of `Shared`).
    Closed,
    /// Calls are refused until `until`. `reopen_count`: re-opens in a row from HALF_OPEN
    /// (0 after a trip), the exponent of the open backoff.
    Open {
        until: u64,
        open_nanos: u64,
        reopen_count: u32,
    },
    /// `issued` probe permits are out (answered or not); `succeeded` of them succeeded;
    /// `in_flight` are not answered yet.
    HalfOpen {
        issued: u32,
        succeeded: u32,
        in_flight: Vec<Probe>,
        reopen_count: u32,
    },
}

impl State {
    fn kind(&self) -> StateKind {
        match self {
            State::Closed => StateKind::Closed,
            State::Open { .. } => StateKind::Open,
            State::HalfOpen { .. } => StateKind::HalfOpen,
        }
    }
}

/// What the mutex guards.
#[derive(Debug)]
struct Machine {
    state: State,
    /// The current state's epoch (also in the state word).
    epoch: u64,
    /// When the current state was entered.
    entered: u64,
    trips: u64,
    reopens: u64,
    next_probe_id: u64,
}

fn word(epoch: u64, kind: StateKind) -> u64 {
    (epoch << 2) | kind.gauge() as u64
}

fn word_kind(word: u64) -> StateKind {
    match word & 0b11 {
        0 => StateKind::Closed,
        1 => StateKind::Open,
        _ => StateKind::HalfOpen,
    }
}

/// A value on a cache line of its own, so that writes to it do not slow reads of its
/// neighbours (the state word is read by every call; the counter is written by every call).
#[derive(Debug)]
#[repr(align(64))]
struct Padded<T>(T);

#[derive(Debug)]
pub(super) struct Shared {
    hop: String,
    settings: Settings,
    /// Time zero of every `u64` time here.
    base: Instant,
    /// `epoch << 2 | state` (0 closed, 1 open, 2 half_open).
    word: Padded<AtomicU64>,
    /// While OPEN: until when (nanos since `base`); written before the word.
    open_until: AtomicU64,
    /// Failures in a row while CLOSED.
    consecutive: Padded<AtomicU32>,
    window: Window,
    machine: Mutex<Machine>,
    metrics: Handles,
}

impl Shared {
    pub fn new(hop: &str, config: &BreakerConfig, metrics: Handles) -> Self {
        Shared {
            hop: hop.to_owned(),
            settings: Settings::new(config),
            base: Instant::now(),
            word: Padded(AtomicU64::new(word(0, StateKind::Closed))),
            open_until: AtomicU64::new(0),
            consecutive: Padded(AtomicU32::new(0)),
            window: Window::new(config.window_ms, config.buckets),
            machine: Mutex::new(Machine {
                state: State::Closed,
                epoch: 0,
                entered: 0,
                trips: 0,
                reopens: 0,
                next_probe_id: 0,
            }),
            metrics,
        }
    }

    pub fn hop(&self) -> &str {
        &self.hop
    }

    fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }

    /// `at` in nanoseconds since the breaker's creation.
    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // Nothing under the lock can leave the machine half-updated in a way that matters
        // more than refusing every call from then on would.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ===== admission =====

    /// Admits a call (`Some`) or refuses it (`None`).
    pub fn admit(&self) -> Option<Ticket> {
        let w = self.word.0.load(Ordering::Acquire);
        match word_kind(w) {
            // The fast path: one atomic load.
            StateKind::Closed => Some(Ticket::Closed { epoch: w >> 2 }),
            // Still within the open period: refuse without a lock.
            StateKind::Open if self.now() < self.open_until.load(Ordering::Acquire) => None,
            // The open period may be over, or HALF_OPEN hands out permits: the slow path.
            _ => self.admit_slow(),
        }
    }

    fn admit_slow(&self) -> Option<Ticket> {
        let now = self.now();
        let mut m = self.lock();
        self.advance(&mut m, now);
        let probes = self.settings.half_open_probes;
        let timeout = self.settings.probe_timeout_nanos;
        let Machine {
            state,
            epoch,
            next_probe_id,
            ..
        } = &mut *m;
        match state {
            // Closed meanwhile (a probe succeeded between our load and the lock).
            State::Closed => Some(Ticket::Closed { epoch: *epoch }),
            State::Open { .. } => None,
            State::HalfOpen {
                issued, in_flight, ..
            } => {
                if *issued >= probes {
                    // Every permit is out: refuse until they are answered or expire.
                    return None;
                }
                *issued += 1;
                let id = *next_probe_id;
                *next_probe_id += 1;
                in_flight.push(Probe {
                    id,
                    expires: now.saturating_add(timeout),
                });
                Some(Ticket::Probe { epoch: *epoch, id })
            }
        }
    }

    /// Counts a refusal (a call was actually turned away).
    pub fn rejected(&self) {
        self.metrics.rejection();
    }

    // ===== outcomes =====

    /// Records how an admitted call ended.
    pub fn complete(&self, ticket: Ticket, outcome: Outcome) {
        match ticket {
            Ticket::Closed { epoch } => self.complete_closed(epoch, outcome),
            Ticket::Probe { epoch, id } => self.complete_probe(epoch, id, outcome),
        }
    }

    fn complete_closed(&self, epoch: u64, outcome: Outcome) {
        if self.word.0.load(Ordering::Acquire) != word(epoch, StateKind::Closed) {
            // The breaker changed state since this call was admitted: its outcome says
            // nothing about the current state (and must not count as a probe).
            return;
        }
        let failed = crate::classify::is_server_failure(outcome.code);
        let slow = self.settings.is_slow(&outcome);
        let now = self.nanos(outcome.ended);

        let consecutive = if failed {
            self.consecutive.0.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            // Only write when needed: a store on every success would bounce the line.
            if self.consecutive.0.load(Ordering::Relaxed) != 0 {
                self.consecutive.0.store(0, Ordering::Release);
            }
            0
        };
        self.window.record(now, failed, slow);

        if let Some(reason) = self.trip_reason(consecutive, now) {
            self.trip(epoch, now, &reason);
        }
    }

    /// Why the breaker should trip now, if it should.
    fn trip_reason(&self, consecutive: u32, now: u64) -> Option<String> {
        let s = &self.settings;
        if let Some(n) = s.consecutive_failures
            && consecutive >= n
        {
            return Some(format!("{consecutive} consecutive failures"));
        }
        if s.failure_rate.is_none() && s.slow_call_rate.is_none() {
            return None;
        }
        let totals = self.window.totals(now);
        if totals.calls < s.min_calls {
            return None;
        }
        let calls = totals.calls as f64;
        if let Some(threshold) = s.failure_rate {
            let rate = totals.failures as f64 / calls;
            if rate >= threshold {
                return Some(format!(
                    "failure rate {rate:.2} >= {threshold} over {} calls in the window",
                    totals.calls
                ));
            }
        }
        if let Some(threshold) = s.slow_call_rate {
            let rate = totals.slow as f64 / calls;
            if rate >= threshold {
                return Some(format!(
                    "slow-call rate {rate:.2} >= {threshold} (slower than {} ms) over {} calls \
                     in the window",
                    s.slow_call.as_millis(),
                    totals.calls
                ));
            }
        }
        None
    }

    fn complete_probe(&self, epoch: u64, id: u64, outcome: Outcome) {
        let now = self.nanos(outcome.ended);
        let mut m = self.lock();
        // Expire other probes first: a permit that ran out before this answer came failed.
        self.advance(&mut m, now);
        if m.epoch != epoch {
            // This probe's HALF_OPEN is over (another probe failed, or this one's permit
            // expired): the answer came too late to count.
            return;
        }
        let State::HalfOpen {
            succeeded,
            in_flight,
            reopen_count,
            ..
        } = &mut m.state
        else {
            return;
        };
        let Some(at) = in_flight.iter().position(|p| p.id == id) else {
            return;
        };
        in_flight.swap_remove(at);

        let server_failure = crate::classify::is_server_failure(outcome.code);
        let slow = self.settings.slow_call_rate.is_some() && self.settings.is_slow(&outcome);
        if server_failure || slow {
            // HALF_OPEN -> OPEN: the downstream is still failing; back off for longer.
            let reopen_count = reopen_count.saturating_add(1);
            let reason = if server_failure {
                format!("probe failed with {}", CodeName(outcome.code))
            } else {
                format!(
                    "probe slower than {} ms",
                    self.settings.slow_call.as_millis()
                )
            };
            self.reopen(&mut m, now, reopen_count, &reason);
            return;
        }
        *succeeded += 1;
        if *succeeded >= self.settings.half_open_probes {
            // HALF_OPEN -> CLOSED: every probe succeeded, the downstream answers again.
            let reason = format!("{} probes succeeded", self.settings.half_open_probes);
            self.close(&mut m, now, &reason);
        }
    }

    /// A call's response future was dropped before it ended: a probe gives its permit
    /// back (the caller went away; that says nothing about the downstream), so that the
    /// next call can probe instead.
    pub fn release(&self, ticket: Ticket) {
        let Ticket::Probe { epoch, id } = ticket else {
            return;
        };
        let mut m = self.lock();
        if m.epoch != epoch {
            return;
        }
        if let State::HalfOpen {
            issued, in_flight, ..
        } = &mut m.state
            && let Some(at) = in_flight.iter().position(|p| p.id == id)
        {
            in_flight.swap_remove(at);
            *issued -= 1;
        }
    }

    // ===== transitions (only under the lock) =====

    /// Applies the transitions that time alone causes, each at the instant it was due (so the
    /// result does not depend on when somebody looked).
    fn advance(&self, m: &mut Machine, now: u64) {
        loop {
            match &m.state {
                State::Open {
                    until, open_nanos, ..
                } if *until <= now => {
                    // OPEN -> HALF_OPEN: the open period is over; let a few probes find out
                    // whether the downstream recovered.
                    let (at, reason) =
                        (*until, format!("open for {} ms", open_nanos / NANOS_PER_MS));
                    self.half_open(m, at, &reason);
                }
                State::HalfOpen {
                    in_flight,
                    reopen_count,
                    ..
                } => {
                    let Some(expired) = in_flight
                        .iter()
                        .map(|p| p.expires)
                        .min()
                        .filter(|e| *e <= now)
                    else {
                        return;
                    };
                    // HALF_OPEN -> OPEN: a probe was not answered in time; count it as a
                    // failure rather than wait for it (the breaker must not stick here).
                    let reopen_count = reopen_count.saturating_add(1);
                    let reason = format!(
                        "probe unanswered for {} ms",
                        self.settings.probe_timeout_nanos / NANOS_PER_MS
                    );
                    self.reopen(m, expired, reopen_count, &reason);
                }
                _ => return,
            }
        }
    }

    /// CLOSED -> OPEN, if the breaker is still CLOSED in `epoch`.
    fn trip(&self, epoch: u64, now: u64, reason: &str) {
        let mut m = self.lock();
        if m.epoch != epoch {
            // Another call tripped it first.
            return;
        }
        m.trips += 1;
        // A trip starts a fresh backoff: the first open lasts `open_ms`.
        self.open(&mut m, now, 0, Transition::Trip, reason);
    }

    /// HALF_OPEN -> OPEN, with the open duration of `reopen_count` re-opens in a row.
    fn reopen(&self, m: &mut Machine, at: u64, reopen_count: u32, reason: &str) {
        m.reopens += 1;
        self.open(m, at, reopen_count, Transition::Reopen, reason);
    }

    fn open(
        &self,
        m: &mut Machine,
        at: u64,
        reopen_count: u32,
        transition: Transition,
        reason: &str,
    ) {
        let open_nanos = self.settings.open_nanos(reopen_count);
        let until = at.saturating_add(open_nanos);
        // Written before the word, so whoever sees OPEN in the word sees this deadline.
        self.open_until.store(until, Ordering::Release);
        self.enter(
            m,
            State::Open {
                until,
                open_nanos,
                reopen_count,
            },
            at,
            transition,
            reason,
        );
    }

    /// OPEN -> HALF_OPEN.
    fn half_open(&self, m: &mut Machine, at: u64, reason: &str) {
        let reopen_count = match m.state {
            State::Open { reopen_count, .. } => reopen_count,
            _ => 0,
        };
        let state = State::HalfOpen {
            issued: 0,
            succeeded: 0,
            in_flight: Vec::with_capacity(self.settings.half_open_probes as usize),
            reopen_count,
        };
        self.enter(m, state, at, Transition::Probe, reason);
    }

    /// HALF_OPEN -> CLOSED, with a clean slate: the window and the consecutive count describe
    /// the outage, not the recovered downstream; the open backoff starts over.
    fn close(&self, m: &mut Machine, at: u64, reason: &str) {
        self.window.reset();
        self.consecutive.0.store(0, Ordering::Release);
        self.enter(m, State::Closed, at, Transition::Close, reason);
    }

    fn enter(&self, m: &mut Machine, state: State, at: u64, transition: Transition, reason: &str) {
        let from = m.state.kind();
        debug_assert_eq!(from, transition.from());
        m.state = state;
        m.epoch += 1;
        m.entered = at;
        // Published last: fast paths see the new state only once it is complete.
        self.word
            .0
            .store(word(m.epoch, m.state.kind()), Ordering::Release);
        self.metrics.transition(transition);
        tracing::info!(
            hop = %self.hop,
            from = from.name(),
            to = transition.to().name(),
            reason,
            "circuit breaker state changed"
        );
    }

    // ===== observation =====

    pub fn state_name(&self) -> &'static str {
        let w = self.word.0.load(Ordering::Acquire);
        match word_kind(w) {
            StateKind::Closed => StateKind::Closed.name(),
            StateKind::Open if self.now() < self.open_until.load(Ordering::Acquire) => {
                StateKind::Open.name()
            }
            // A time-driven transition may be due.
            _ => {
                let now = self.now();
                let mut m = self.lock();
                self.advance(&mut m, now);
                m.state.kind().name()
            }
        }
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let now = self.now();
        let mut m = self.lock();
        self.advance(&mut m, now);
        let totals = self.window.totals(now);
        let ms = |nanos: u64| nanos / NANOS_PER_MS;
        let (open_nanos, open_remaining, probes_in_flight, probes_succeeded, reopen_count) =
            match &m.state {
                State::Closed => (self.settings.open_nanos(0), None, 0, 0, 0),
                State::Open {
                    until,
                    open_nanos,
                    reopen_count,
                } => (
                    *open_nanos,
                    Some(ms(until.saturating_sub(now))),
                    0,
                    0,
                    *reopen_count,
                ),
                State::HalfOpen {
                    succeeded,
                    in_flight,
                    reopen_count,
                    ..
                } => (
                    self.settings.open_nanos(reopen_count.saturating_add(1)),
                    None,
                    in_flight.len(),
                    *succeeded,
                    *reopen_count,
                ),
            };
        serde_json::json!({
            "hop": self.hop,
            "state": m.state.kind().name(),
            "since_ms": ms(now.saturating_sub(m.entered)),
            "calls_in_window": totals.calls,
            "failures_in_window": totals.failures,
            "slow_in_window": totals.slow,
            "consecutive_failures": self.consecutive.0.load(Ordering::Acquire),
            "trips": m.trips,
            "reopens": m.reopens,
            "reopen_count": reopen_count,
            "probes_in_flight": probes_in_flight,
            "probes_succeeded": probes_succeeded,
            "open_ms": ms(open_nanos),
            "open_remaining_ms": open_remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::OpenBackoff;

    #[test]
    fn open_backoff_multiplies_and_caps() {
        let s = Settings::new(&BreakerConfig {
            open_ms: 100,
            open_backoff: Some(OpenBackoff {
                multiplier: 2.0,
                max_ms: 300,
            }),
            ..Default::default()
        });
        let ms: Vec<u64> = (0..5).map(|n| s.open_nanos(n) / NANOS_PER_MS).collect();
        assert_eq!(ms, [100, 200, 300, 300, 300]);
        assert_eq!(s.open_nanos(u32::MAX) / NANOS_PER_MS, 300);
        let s = Settings::new(&BreakerConfig {
            open_ms: 100,
            ..Default::default()
        });
        assert_eq!(
            s.open_nanos(7) / NANOS_PER_MS,
            100,
            "no backoff: always open_ms"
        );
    }

    #[test]
    fn word_round_trips() {
        for kind in [StateKind::Closed, StateKind::Open, StateKind::HalfOpen] {
            let w = word(12345, kind);
            assert_eq!(w >> 2, 12345);
            assert_eq!(word_kind(w), kind);
        }
    }
}
