//! The live fault set of one service: which faults are in force, and the random decisions
//! they make.
//!
//! Why one shared set, read on every call: the fault layer (outage, error, latency) and the
//! service's own code (payments' brownout and in-slot latency, inventory's lock hold) must
//! see the same faults, the admin API changes them while calls are in flight, and `/state`
//! shows them. So [`FaultSet`] is a cheap clone around one mutex-guarded list.
//!
//! Time: a fault acts only from its start and until its expiry, both `tokio::time::Instant`s.
//! Expired faults are dropped on every access, so no background task is needed and a paused
//! test clock drives expiry exactly. The admin API speaks wall-clock ms since the Unix
//! epoch; [`FaultSet::epoch_ms`] and [`FaultSet::instant_at`] convert, anchored once when the
//! set is made.
//!
//! Randomness: each fault has its own `SmallRng` seeded from the fault's seed (mixed with
//! its action, so two faults given the same seed do not make correlated draws). The same
//! seed and the same sequence of calls give the same decisions, so a faulted run can be
//! replayed. Each matching call makes exactly one draw per fault (plus the latency sample),
//! whatever the outcome.
//!
//! Every injection is counted in `chaos_injected_total{kind}` (the `service` label comes
//! from the registry's own labels) and per fault (shown in `/state` and `List`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::spec::{
    Action, Distribution, ErrorMode, FaultInjectionSpec, FaultParams, LatencyParams, MAX_DELAY,
    SpecError, invalid, validate_name,
};
use lab_proto::codes::CODE_NAMES;

/// Method prefixes no fault touches unless its `methods` name them: health checks (so an
/// outage does not also make the orchestrator restart the pod), reflection, and the lab's
/// own services (Faults, Audit), which must keep answering during a fault.
pub const EXEMPT_PREFIXES: [&str; 3] = ["/grpc.health.v1.", "/grpc.reflection.", "/lab.v1."];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The faults in force in one service. Clones share the same set.
#[derive(Clone)]
pub struct FaultSet {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    /// The anchor of the wall-clock conversion: `origin` is `origin_epoch_ms`.
    origin: Instant,
    origin_epoch_ms: i64,
    faults: Mutex<Vec<ActiveFault>>,
    injected: Family<KindLabels, Counter>,
}

struct ActiveFault {
    name: String,
    /// Validated; its `seed` is the seed in use.
    spec: FaultInjectionSpec,
    start: Instant,
    expires: Instant,
    rng: SmallRng,
    /// `spec.error.code`, parsed.
    code: tonic::Code,
    injected: u64,
}

impl ActiveFault {
    fn acts_at(&self, now: Instant) -> bool {
        self.start <= now && now < self.expires
    }

    fn matches(&self, method: &str) -> bool {
        method_matches(&self.spec.methods, method)
    }
}

/// Whether a fault with these `methods` applies to the call `method`: an exact path or a
/// `/pkg.Service/*` pattern; with no `methods`, every method except [`EXEMPT_PREFIXES`].
pub fn method_matches(methods: &[String], method: &str) -> bool {
    if methods.is_empty() {
        return !EXEMPT_PREFIXES.iter().any(|p| method.starts_with(p));
    }
    methods.iter().any(|m| match m.strip_suffix('*') {
        Some(prefix) => method.starts_with(prefix),
        None => m == method,
    })
}

/// How a call should fail, decided by the fault set.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The status to answer.
    pub status: tonic::Status,
    /// Fail-slow: run the call first (its service time is spent), then answer `status`.
    pub after_service: bool,
    /// The fault that decided it.
    pub fault: String,
}

/// What the fault layer does to one call: wait `delay` (if any), then fail (if `fail`).
#[derive(Clone, Debug, Default)]
pub struct Injection {
    pub delay: Option<Duration>,
    pub fail: Option<Failure>,
}

impl Injection {
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.fail.is_none()
    }
}

/// A fault as `List` and `/state` show it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveFaultView {
    pub name: String,
    /// The fault's spec; `seed` is the seed in use.
    pub spec: FaultInjectionSpec,
    pub start: Instant,
    pub expires_at: Instant,
    /// `start` in ms since the Unix epoch.
    pub start_at_ms: i64,
    /// `expires_at` in ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// Whether it has started (a fault applied with a later start waits).
    pub started: bool,
    /// Injections it has made so far.
    pub injected: u64,
}

impl FaultSet {
    /// An empty fault set for `service`, registering `chaos_injected_total{kind}` in
    /// `registry` (whose own labels carry the service name).
    pub fn new(service: &str, registry: &mut Registry) -> Self {
        let injected = Family::<KindLabels, Counter>::default();
        for action in Action::ALL {
            // Every kind shows from the start, at 0, so rates work before the first fault.
            let _ = injected.get_or_create(&KindLabels {
                kind: action.as_str(),
            });
        }
        registry.register(
            "chaos_injected",
            "Faults injected into calls, by kind (error, latency, brownout, outage, lock-hold)",
            injected.clone(),
        );
        let origin_epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            inner: Arc::new(Inner {
                service: service.to_string(),
                origin: Instant::now(),
                origin_epoch_ms,
                faults: Mutex::new(Vec::new()),
                injected,
            }),
        }
    }

    /// The service this set belongs to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// `at` in ms since the Unix epoch (anchored when the set was made).
    pub fn epoch_ms(&self, at: Instant) -> i64 {
        let offset = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if at >= self.inner.origin {
            self.inner
                .origin_epoch_ms
                .saturating_add(offset(at - self.inner.origin))
        } else {
            self.inner
                .origin_epoch_ms
                .saturating_sub(offset(self.inner.origin - at))
        }
    }

    /// The instant of `epoch_ms` (ms since the Unix epoch); the inverse of
    /// [`epoch_ms`](Self::epoch_ms), saturating at the earliest representable instant.
    pub fn instant_at(&self, epoch_ms: i64) -> Instant {
        let delta = epoch_ms.saturating_sub(self.inner.origin_epoch_ms);
        let magnitude = Duration::from_millis(delta.unsigned_abs());
        if delta >= 0 {
            self.inner.origin + magnitude
        } else {
            self.inner
                .origin
                .checked_sub(magnitude)
                .unwrap_or(self.inner.origin)
        }
    }

    /// Puts a fault in force from `start` for `spec.duration()`, replacing any fault of the
    /// same name, and returns when it expires. Refused (nothing changes) if the spec is
    /// invalid, targets another service, or would already have ended. `seed` seeds its
    /// draws (pass `spec.seed` unless overriding it). The spec's `mode` and `labels` are the
    /// cluster's business (which pods get the fault); in this process it simply applies.
    pub fn apply(
        &self,
        name: &str,
        spec: &FaultInjectionSpec,
        start: Instant,
        seed: u64,
    ) -> Result<Instant, SpecError> {
        validate_name("name", name)?;
        spec.validate()?;
        if spec.selector.service != self.inner.service {
            return Err(invalid(
                "spec.selector.service",
                format!(
                    "this is {}; the fault targets {:?}",
                    self.inner.service, spec.selector.service
                ),
            ));
        }
        let now = Instant::now();
        let expires = start + spec.duration();
        if expires <= now {
            return Err(invalid(
                "start_at_ms",
                format!(
                    "the fault would already have ended (start {} ms ago, duration {})",
                    (now - start).as_millis(),
                    spec.duration
                ),
            ));
        }
        let code = spec
            .error
            .as_ref()
            .and_then(|e| CODE_NAMES.iter().find(|(n, _)| *n == e.code))
            .map_or(tonic::Code::Unknown, |(_, c)| *c);
        let mut stored = spec.clone();
        stored.seed = seed;
        let fault = ActiveFault {
            name: name.to_string(),
            rng: SmallRng::seed_from_u64(mix_seed(seed, spec.action)),
            spec: stored,
            start,
            expires,
            code,
            injected: 0,
        };
        tracing::info!(
            service = %self.inner.service,
            fault = name,
            action = %spec.action,
            seed,
            starts_in_ms = start.saturating_duration_since(now).as_millis(),
            duration = %spec.duration,
            "fault applied"
        );
        let mut faults = self.lock(now);
        faults.retain(|f| f.name != name);
        faults.push(fault);
        Ok(expires)
    }

    /// Removes the fault `name`, or every fault with `None`; returns how many were removed
    /// (faults that had expired already do not count).
    pub fn clear(&self, name: Option<&str>) -> u32 {
        let mut faults = self.lock(Instant::now());
        let before = faults.len();
        match name {
            Some(name) => faults.retain(|f| f.name != name),
            None => faults.clear(),
        }
        let cleared = u32::try_from(before - faults.len()).unwrap_or(u32::MAX);
        if cleared > 0 {
            tracing::info!(service = %self.inner.service, fault = ?name, cleared, "faults cleared");
        }
        cleared
    }

    /// The faults in force or waiting for their start, in the order they were applied.
    pub fn list(&self) -> Vec<ActiveFaultView> {
        let now = Instant::now();
        let faults = self.lock(now);
        faults
            .iter()
            .map(|f| ActiveFaultView {
                name: f.name.clone(),
                spec: f.spec.clone(),
                start: f.start,
                expires_at: f.expires,
                start_at_ms: self.epoch_ms(f.start),
                expires_at_ms: self.epoch_ms(f.expires),
                started: f.start <= now,
                injected: f.injected,
            })
            .collect()
    }

    /// The `/state` view: one object per fault with `name`, `action`, `params` (the wire
    /// `params_json`, as JSON), `seed`, `duration`, `startedAtMs`, `expiresAtMs`, `active`
    /// and `injected`.
    pub fn snapshot(&self) -> Value {
        Value::Array(
            self.list()
                .into_iter()
                .map(|v| {
                    json!({
                        "name": v.name,
                        "action": v.spec.action.as_str(),
                        "params": serde_json::to_value(FaultParams::from(&v.spec))
                            .unwrap_or(Value::Null),
                        "seed": v.spec.seed,
                        "duration": v.spec.duration,
                        "startedAtMs": v.start_at_ms,
                        "expiresAtMs": v.expires_at_ms,
                        "active": v.started,
                        "injected": v.injected,
                    })
                })
                .collect(),
        )
    }

    /// Whether any fault is in force or waiting.
    pub fn is_empty(&self) -> bool {
        self.lock(Instant::now()).is_empty()
    }

    /// `chaos_injected_total{kind}` of this set so far.
    pub fn injected(&self, kind: Action) -> u64 {
        self.inner
            .injected
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .get()
    }

    /// What the fault layer does to a call of `method`: an outage refuses it; an error fault
    /// draws whether it fails (fail-fast or fail-slow); with `with_latency`, latency faults
    /// draw a delay. Each injection is counted.
    pub fn decide(&self, method: &str, with_latency: bool) -> Injection {
        let now = Instant::now();
        let mut faults = self.lock(now);
        let mut injection = Injection::default();
        if faults.is_empty() {
            return injection;
        }
        if let Some(outage) = faults
            .iter_mut()
            .find(|f| f.spec.action == Action::Outage && f.acts_at(now) && f.matches(method))
        {
            outage.injected += 1;
            self.count(Action::Outage);
            injection.fail = Some(Failure {
                status: tonic::Status::unavailable(format!(
                    "injected outage (fault {})",
                    outage.name
                )),
                after_service: false,
                fault: outage.name.clone(),
            });
            return injection;
        }
        for fault in faults
            .iter_mut()
            .filter(|f| f.acts_at(now) && f.matches(method))
        {
            match fault.spec.action {
                Action::Error => {
                    let Some(params) = &fault.spec.error else {
                        continue;
                    };
                    let hit = fault.rng.random_bool(params.probability);
                    if hit && injection.fail.is_none() {
                        fault.injected += 1;
                        self.count(Action::Error);
                        injection.fail = Some(Failure {
                            status: tonic::Status::new(
                                fault.code,
                                format!("injected error (fault {})", fault.name),
                            ),
                            after_service: params.mode == ErrorMode::FailSlow,
                            fault: fault.name.clone(),
                        });
                    }
                }
                Action::Latency if with_latency => {
                    if let Some(delay) = self.draw_latency(fault) {
                        injection.delay = Some(injection.delay.unwrap_or_default() + delay);
                    }
                }
                _ => {}
            }
        }
        injection
    }

    /// Hook for a service that applies latency faults itself (payments, inside its capacity
    /// slot): the delay for one call of `method`, the sum of one draw per latency fault in
    /// force that matches it; `None` when no fault delays this call.
    pub fn extra_latency(&self, method: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut faults = self.lock(now);
        let mut total: Option<Duration> = None;
        for fault in faults
            .iter_mut()
            .filter(|f| f.spec.action == Action::Latency && f.acts_at(now) && f.matches(method))
        {
            if let Some(delay) = self.draw_latency(fault) {
                total = Some(total.unwrap_or_default() + delay);
            }
        }
        total
    }

    /// Hook for payments: the share of its capacity left by a brownout in force (the
    /// smallest, if several), or `None`. Each `Some` is counted as one injection, so call
    /// it once per charge.
    pub fn brownout_factor(&self) -> Option<f64> {
        let now = Instant::now();
        let mut faults = self.lock(now);
        let mut factor: Option<f64> = None;
        for fault in faults
            .iter_mut()
            .filter(|f| f.spec.action == Action::Brownout && f.acts_at(now))
        {
            if let Some(params) = &fault.spec.brownout {
                fault.injected += 1;
                factor = Some(factor.map_or(params.capacity_factor, |f: f64| {
                    f.min(params.capacity_factor)
                }));
            }
        }
        if factor.is_some() {
            self.count(Action::Brownout);
        }
        factor
    }

    /// Hook for inventory: how long this reservation (`method`) keeps the stock row lock
    /// held, if a lock-hold fault in force draws it (the longest, if several).
    pub fn lock_hold(&self, method: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut faults = self.lock(now);
        let mut hold: Option<Duration> = None;
        for fault in faults
            .iter_mut()
            .filter(|f| f.spec.action == Action::LockHold && f.acts_at(now) && f.matches(method))
        {
            let Some(params) = &fault.spec.lock_hold else {
                continue;
            };
            if fault.rng.random_bool(params.probability) {
                fault.injected += 1;
                let this = Duration::from_millis(params.hold_ms);
                hold = Some(hold.map_or(this, |h| h.max(this)));
            }
        }
        if hold.is_some() {
            self.count(Action::LockHold);
        }
        hold
    }

    fn draw_latency(&self, fault: &mut ActiveFault) -> Option<Duration> {
        let params = fault.spec.latency.as_ref()?;
        if !fault.rng.random_bool(params.probability) {
            return None;
        }
        let delay = sample_latency(params, &mut fault.rng);
        fault.injected += 1;
        self.count(Action::Latency);
        Some(delay)
    }

    fn count(&self, kind: Action) {
        self.inner
            .injected
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The list, with faults expired by `now` dropped.
    fn lock(&self, now: Instant) -> MutexGuard<'_, Vec<ActiveFault>> {
        let mut faults = self
            .inner
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        faults.retain(|f| {
            let live = now < f.expires;
            if !live {
                tracing::info!(service = %self.inner.service, fault = %f.name, injected = f.injected, "fault expired");
            }
            live
        });
        faults
    }
}

impl std::fmt::Debug for FaultSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultSet")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

/// The RNG seed of a fault: its seed mixed with its action (splitmix64's finalizer), so
/// that an error and a latency fault given the same seed draw independently.
fn mix_seed(seed: u64, action: Action) -> u64 {
    let salt: u64 = match action {
        Action::Error => 1,
        Action::Latency => 2,
        Action::Brownout => 3,
        Action::Outage => 4,
        Action::LockHold => 5,
    };
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// z for which the standard normal CDF is 0.95: p95 = p50 * exp(1.6449 sigma).
const Z95: f64 = 1.644_853_626_951_472_2;

/// One latency draw, capped at [`MAX_DELAY`].
///
/// - fixed: `fixedMs`;
/// - uniform: `minMs..=maxMs` (µs resolution);
/// - lognormal: `exp(mu + sigma z)` with `mu = ln p50`, `sigma = (ln p95 - ln p50) / 1.6449`
///   and `z` standard normal (Box–Muller), so the median is p50 and the 95th percentile p95;
/// - pareto: `scale / u^(1/shape)` with `u` uniform in (0, 1] (inverse CDF): never below
///   `scaleMs`, median `scale * 2^(1/shape)`, a heavier tail the smaller `shape` is.
pub fn sample_latency(params: &LatencyParams, rng: &mut SmallRng) -> Duration {
    let ms = |v: Option<u64>| v.unwrap_or(0) as f64;
    let millis = match params.distribution {
        Distribution::Fixed => ms(params.fixed_ms),
        Distribution::Uniform => {
            let (min, max) = (
                params.min_ms.unwrap_or(0) * 1000,
                params.max_ms.unwrap_or(0) * 1000,
            );
            rng.random_range(min..=max.max(min)) as f64 / 1000.0
        }
        Distribution::Lognormal => {
            let (p50, p95) = (ms(params.p50_ms).max(1e-3), ms(params.p95_ms));
            let mu = p50.ln();
            let sigma = ((p95.max(p50)).ln() - mu) / Z95;
            // Box–Muller; u1 in (0, 1] so ln(u1) is finite.
            let u1 = 1.0 - rng.random::<f64>();
            let u2 = rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (mu + sigma * z).exp()
        }
        Distribution::Pareto => {
            let scale = ms(params.scale_ms);
            let shape = params.shape.unwrap_or(1.0);
            let u = 1.0 - rng.random::<f64>();
            scale / u.powf(1.0 / shape)
        }
    };
    let max_ms = MAX_DELAY.as_secs_f64() * 1000.0;
    if !millis.is_finite() || millis >= max_ms {
        return MAX_DELAY;
    }
    Duration::from_secs_f64(millis.max(0.0) / 1000.0)
}
