//! The numbers an experiment reports, computed from what the services expose: their
//! `/metrics` text, their `lab.v1.Audit` snapshots and the load generator's per-second
//! timeline. Every function here is pure; the definitions are those of DESIGN.md
//! ("Metrics — exact definitions"), and each one says which counter it reads.
//!
//! - [`parse_prometheus`], [`sum`], [`counter_deltas`]: read scrapes and take the increase
//!   between the scrape after warm-up and the one at the end.
//! - [`Amplification`]: retry amplification per hop, end to end and at the gateway.
//! - [`Audit`], [`Duplicates`], [`lost_events`], [`orphaned_reservations`],
//!   [`wasted_charges`]: invariants read after the drain.
//! - [`baseline_rate`], [`recovery`], [`Recovery`]: time to recover after the fault ends.
//! - [`ci95`], [`Interval`]: mean and 95 % confidence interval over trials.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use lab_proto::lab::v1::SnapshotResponse;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// ---------------------------------------------------------------------------------------
// Prometheus / OpenMetrics text
// ---------------------------------------------------------------------------------------

/// One series value of a scrape: `name{labels} value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the series has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A line of exposition text that is neither a comment nor a sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metrics text line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parses Prometheus or OpenMetrics exposition text into samples.
///
/// Comments (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) and blank lines are skipped. Label
/// values are unescaped (`\\`, `\"`, `\n`); histogram lines (`_bucket{le="0.5"}`, `_sum`,
/// `_count`) are ordinary samples with their `le` label. A timestamp after the value and an
/// OpenMetrics exemplar (`# {trace_id="…"} 1.0`) are ignored. A line that cannot be read
/// is an error naming it: a silently dropped series would skew every ratio built on it.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ParseError {
            line: i + 1,
            reason,
            text: raw.to_string(),
        };
        samples.push(parse_line(line).map_err(err)?);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value after the metric name")?;
    let name = &line[..name_end];
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    // The value, then optionally a timestamp, then optionally ` # {exemplar} value [ts]`.
    let rest = rest.split(" # ").next().unwrap_or_default();
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("no value after the labels")?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

/// Reads `key="value",…}` (the opening brace already consumed); returns what follows `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err("bad label name");
        }
        let after_eq = s[eq + 1..].trim_start();
        let quoted = after_eq.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        s = quoted[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label");
        }
    }
}

fn parse_value(v: &str) -> Result<f64, &'static str> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| "bad sample value"),
    }
}

/// Sum of the values of every series named `name` that carries all of `labels` (other
/// labels may differ): `sum(s, "rpc_server_requests_total", &[("service", "payments")])`.
/// No matching series gives 0.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.matches(name, labels))
        .map(|s| s.value)
        .sum()
}

/// Whether a series only ever grows: counters (`_total`) and the histogram series
/// (`_bucket`, `_count`, `_sum` of non-negative durations).
pub fn is_counter(name: &str) -> bool {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The increase of every counter series of `after` since `before` (the scrape after
/// warm-up and the scrape at the end), keyed by name and labels.
///
/// - A series absent from `before` started at 0.
/// - A counter lower in `after` than in `before` was reset (its process restarted, as in
///   the crash scenarios): the increase is taken as its `after` value, like Prometheus's
///   `increase()`. That is a lower bound: what it counted between the first scrape and
///   the crash is lost.
/// - Series that are not counters ([`is_counter`]), i.e. gauges such as
///   `resilience_breaker_state`, keep their `after` value.
pub fn counter_deltas(before: &[Sample], after: &[Sample]) -> Vec<Sample> {
    let earlier: BTreeMap<(&str, &BTreeMap<String, String>), f64> = before
        .iter()
        .map(|s| ((s.name.as_str(), &s.labels), s.value))
        .collect();
    after
        .iter()
        .map(|s| {
            let value = if is_counter(&s.name) {
                let start = earlier
                    .get(&(s.name.as_str(), &s.labels))
                    .copied()
                    .unwrap_or(0.0);
                if s.value >= start {
                    s.value - start
                } else {
                    s.value
                }
            } else {
                s.value
            };
            Sample {
                name: s.name.clone(),
                labels: s.labels.clone(),
                value,
            }
        })
        .collect()
}

/// `numerator / denominator`, or `None` when the denominator is zero (never NaN or ∞).
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if denominator == 0.0 || !numerator.is_finite() || !denominator.is_finite() {
        None
    } else {
        Some(numerator / denominator)
    }
}

// ---------------------------------------------------------------------------------------
// Retry amplification
// ---------------------------------------------------------------------------------------

/// Received attempts of every callee, counted server side on arrival before any fault or
/// admission check (`lab_runtime::metrics::ServerMetricsLayer`).
pub const SERVER_REQUESTS: &str = "rpc_server_requests_total";
/// Logical calls (first attempts) a caller made on a hop (`CountLayer::requests`).
pub const CLIENT_REQUESTS: &str = "resilience_client_requests_total";
/// The load generator's call.
pub const PLACE_ORDER: &str = "/shop.v1.Gateway/PlaceOrder";
/// The call whose attempts measure end-to-end amplification.
pub const CHARGE: &str = "/shop.v1.Payments/Charge";

/// One hop of the request flow: which service calls which, and the gRPC methods the caller
/// sends through that hop's client (its `resilience_client_requests_total{hop}` counts all
/// of them, so the callee's received attempts are summed over the same methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The `hop` label of the caller's client metrics, also the callee's `service` label.
    pub name: &'static str,
    pub caller: &'static str,
    pub methods: &'static [&'static str],
}

/// Every hop, in request-flow order. Orders releases reservations through the inventory
/// hop and the gateway forwards GetOrder through the orders hop, so those methods are
/// counted with the business call of their hop.
pub const HOPS: [Hop; 4] = [
    Hop {
        name: "orders",
        caller: "gateway",
        methods: &["/shop.v1.Orders/CreateOrder", "/shop.v1.Orders/GetOrder"],
    },
    Hop {
        name: "inventory",
        caller: "orders",
        methods: &["/shop.v1.Inventory/Reserve", "/shop.v1.Inventory/Release"],
    },
    Hop {
        name: "payments",
        caller: "orders",
        methods: &[CHARGE],
    },
    Hop {
        name: "notifications",
        caller: "orders",
        methods: &["/shop.v1.Notifications/Deliver"],
    },
];

/// The counts behind one hop's amplification, kept so a reader can check the ratio.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HopCounts {
    /// Caller's `resilience_client_requests_total{service=caller,hop}`.
    pub first_attempts: f64,
    /// Callee's `rpc_server_requests_total{service=hop,method∈hop.methods}`.
    pub attempts_received: f64,
}

/// Retry amplification of one trial. Every ratio is `None` when its denominator is zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Amplification {
    /// Per hop (keyed by [`Hop::name`]): attempts received by the callee / first attempts
    /// made by the caller.
    pub per_hop: BTreeMap<String, Option<f64>>,
    /// Payments Charge attempts received / logical requests of the load generator.
    pub end_to_end: Option<f64>,
    /// Gateway PlaceOrder attempts received / logical requests: the load generator's own
    /// retries (1.0 when it does not retry).
    pub client: Option<f64>,
    /// The numerators and denominators of `per_hop`.
    pub counts: BTreeMap<String, HopCounts>,
    pub logical_requests: u64,
    pub place_order_attempts: f64,
    pub charge_attempts: f64,
}

impl Amplification {
    /// From the counter deltas of all five services' scrapes taken together (every series
    /// carries its `service` label) and the number of logical requests the load generator
    /// issued over the same interval.
    pub fn from_samples(deltas: &[Sample], logical_requests: u64) -> Amplification {
        let mut per_hop = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for hop in HOPS {
            let first_attempts = sum(
                deltas,
                CLIENT_REQUESTS,
                &[("service", hop.caller), ("hop", hop.name)],
            );
            let attempts_received = hop
                .methods
                .iter()
                .map(|m| {
                    sum(
                        deltas,
                        SERVER_REQUESTS,
                        &[("service", hop.name), ("method", m)],
                    )
                })
                .sum();
            per_hop.insert(
                hop.name.to_string(),
                ratio(attempts_received, first_attempts),
            );
            counts.insert(
                hop.name.to_string(),
                HopCounts {
                    first_attempts,
                    attempts_received,
                },
            );
        }
        let place_order_attempts = sum(
            deltas,
            SERVER_REQUESTS,
            &[("service", "gateway"), ("method", PLACE_ORDER)],
        );
        let charge_attempts = sum(
            deltas,
            SERVER_REQUESTS,
            &[("service", "payments"), ("method", CHARGE)],
        );
        let logical = logical_requests as f64;
        Amplification {
            per_hop,
            end_to_end: ratio(charge_attempts, logical),
            client: ratio(place_order_attempts, logical),
            counts,
            logical_requests,
            place_order_attempts,
            charge_attempts,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Breakers and rejections
// ---------------------------------------------------------------------------------------

/// Breaker openings: `resilience_breaker_transitions_total{to="open"}` over every service
/// and hop (from closed, and again from half-open).
pub fn breaker_opens(deltas: &[Sample]) -> u64 {
    sum(
        deltas,
        "resilience_breaker_transitions_total",
        &[("to", "open")],
    )
    .round() as u64
}

/// Whether any breaker in a scrape is not closed: `resilience_breaker_state` is 1 (open)
/// or 2 (half-open) for some service and hop.
pub fn any_breaker_not_closed(samples: &[Sample]) -> bool {
    samples
        .iter()
        .any(|s| s.name == "resilience_breaker_state" && s.value != 0.0)
}

/// Seconds with at least one breaker not closed, from samples `(seconds since start, any
/// not closed)` taken in time order, up to `end` seconds: each sample's state holds until
/// the next sample (or `end`). Before the first sample counts as closed.
pub fn time_not_closed(samples: &[(f64, bool)], end: f64) -> f64 {
    let mut total = 0.0;
    for (i, &(at, open)) in samples.iter().enumerate() {
        let until = samples.get(i + 1).map_or(end, |next| next.0).min(end);
        if open && until > at {
            total += until - at;
        }
    }
    total
}

/// Calls refused by an admission pattern, over every service and hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejections {
    /// `resilience_bulkhead_rejections_total`: the bulkhead stayed full for its whole wait.
    pub bulkhead: u64,
    /// `resilience_shed_total`: refused at once by load shedding (max in flight).
    pub shed: u64,
    /// `resilience_adaptive_rejections_total`: the adaptive concurrency limit was reached.
    pub adaptive: u64,
    /// `resilience_breaker_rejections_total`: refused by an open breaker without being sent.
    pub breaker: u64,
}

impl Rejections {
    pub fn from_samples(deltas: &[Sample]) -> Rejections {
        let total = |name| sum(deltas, name, &[]).round() as u64;
        Rejections {
            bulkhead: total("resilience_bulkhead_rejections_total"),
            shed: total("resilience_shed_total"),
            adaptive: total("resilience_adaptive_rejections_total"),
            breaker: total("resilience_breaker_rejections_total"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Audit invariants
// ---------------------------------------------------------------------------------------

/// One service's `lab.v1.Audit/Snapshot` answer (taken with `include_ids`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub counters: BTreeMap<String, i64>,
    pub ids: BTreeMap<String, BTreeSet<String>>,
}

impl Audit {
    /// A counter, 0 when the service did not report it.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0).max(0) as u64
    }

    /// An id set, empty when the service did not report it.
    pub fn id_set(&self, name: &str) -> BTreeSet<String> {
        self.ids.get(name).cloned().unwrap_or_default()
    }
}

impl From<&SnapshotResponse> for Audit {
    fn from(resp: &SnapshotResponse) -> Audit {
        Audit {
            counters: resp.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            ids: resp
                .ids
                .iter()
                .map(|(k, list)| (k.clone(), list.ids.iter().cloned().collect()))
                .collect(),
        }
    }
}

/// The audits of the four services that keep state, read after the drain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Audits {
    pub orders: Audit,
    pub payments: Audit,
    pub notifications: Audit,
    pub inventory: Audit,
}

/// Side effects that happened more than once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicates {
    /// Idempotency keys with more than one confirmed order (orders
    /// `keys_with_duplicate_orders`): "orders created more than once per key".
    pub orders: u64,
    /// Confirmed orders beyond the first per key (orders `duplicate_orders`).
    pub extra_orders: u64,
    /// Orders charged more than once (payments `orders_charged_more_than_once`).
    pub charges: u64,
    /// Charges beyond the first per order (payments `duplicate_charges`).
    pub extra_charges: u64,
    /// Events whose Deliver arrived more than once (notifications
    /// `events_received_more_than_once`; deduplicated by event id, so this counts the
    /// duplicate deliveries the dedup absorbed).
    pub deliveries: u64,
}

impl Duplicates {
    pub fn from_audits(audits: &Audits) -> Duplicates {
        Duplicates {
            orders: audits.orders.counter("keys_with_duplicate_orders"),
            extra_orders: audits.orders.counter("duplicate_orders"),
            charges: audits.payments.counter("orders_charged_more_than_once"),
            extra_charges: audits.payments.counter("duplicate_charges"),
            deliveries: audits
                .notifications
                .counter("events_received_more_than_once"),
        }
    }
}

/// Lost events: confirmed orders with no delivery after the drain
/// (`confirmed_order_ids − delivered_order_ids`).
pub fn lost_events(confirmed: &BTreeSet<String>, delivered: &BTreeSet<String>) -> u64 {
    confirmed.difference(delivered).count() as u64
}

/// Orphaned reservations: open reservations whose order is not confirmed after the drain
/// (`open_reservation_order_ids − confirmed_order_ids`).
pub fn orphaned_reservations(open: &BTreeSet<String>, confirmed: &BTreeSet<String>) -> u64 {
    open.difference(confirmed).count() as u64
}

/// Wasted work: charges completed after the caller's deadline had passed (payments
/// `charges_after_deadline`).
pub fn wasted_charges(payments: &Audit) -> u64 {
    payments.counter("charges_after_deadline")
}

/// The invariants of one trial, from the four audits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariants {
    pub duplicates: Duplicates,
    pub lost_events: u64,
    pub orphaned_reservations: u64,
    pub wasted_charges: u64,
}

impl Invariants {
    pub fn from_audits(audits: &Audits) -> Invariants {
        let confirmed = audits.orders.id_set("confirmed_order_ids");
        Invariants {
            duplicates: Duplicates::from_audits(audits),
            lost_events: lost_events(
                &confirmed,
                &audits.notifications.id_set("delivered_order_ids"),
            ),
            orphaned_reservations: orphaned_reservations(
                &audits.inventory.id_set("open_reservation_order_ids"),
                &confirmed,
            ),
            wasted_charges: wasted_charges(&audits.payments),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timeline and recovery
// ---------------------------------------------------------------------------------------

/// One one-second window of the load generator's timeline: logical requests whose
/// *intended* send time fell in `[second, second + 1)` (seconds since the measured phase
/// began, the clock fault times use) and how many of them succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub second: u32,
    pub issued: u64,
    pub succeeded: u64,
    /// p95 latency of this window as the load generator reports it (its
    /// `load::report::SecondStats` carries the same four fields); `None` without answers.
    pub p95_ms: Option<f64>,
}

impl Window {
    /// `succeeded / issued`, `None` for a window with nothing issued.
    pub fn success_rate(&self) -> Option<f64> {
        ratio(self.succeeded as f64, self.issued as f64)
    }
}

/// Consecutive windows that must all meet the threshold.
pub const RECOVERY_WINDOWS: u32 = 5;
/// Share of the pre-fault baseline success rate a window must reach.
pub const RECOVERY_FRACTION: f64 = 0.95;

/// Success rate over the pre-fault seconds: the windows that end at or before
/// `fault_start_s`, pooled (`Σ succeeded / Σ issued`). `None` when nothing was issued.
pub fn baseline_rate(timeline: &[Window], fault_start_s: f64) -> Option<f64> {
    let (issued, succeeded) = timeline
        .iter()
        .filter(|w| f64::from(w.second) + 1.0 <= fault_start_s)
        .fold((0u64, 0u64), |(i, s), w| (i + w.issued, s + w.succeeded));
    ratio(succeeded as f64, issued as f64)
}

/// How a trial came back after the fault ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recovery {
    /// Seconds from the fault's end to the start of the first healthy run.
    Recovered { seconds: f64 },
    /// No healthy run within the recovery phase: an outcome of its own, never a number.
    DidNotRecover,
}

/// How [`Recovery::DidNotRecover`] is written in results and reports.
pub const DID_NOT_RECOVER: &str = "did not recover";

impl Recovery {
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Recovery::Recovered { seconds } => Some(*seconds),
            Recovery::DidNotRecover => None,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Recovered { seconds } => write!(f, "{seconds} s"),
            Recovery::DidNotRecover => f.write_str(DID_NOT_RECOVER),
        }
    }
}

/// Serialized as the number of seconds, or as the string `"did not recover"`.
impl Serialize for Recovery {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Recovery::Recovered { seconds } => serializer.serialize_f64(*seconds),
            Recovery::DidNotRecover => serializer.serialize_str(DID_NOT_RECOVER),
        }
    }
}

impl<'de> Deserialize<'de> for Recovery {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Seconds(f64),
            Text(String),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Seconds(seconds) => Ok(Recovery::Recovered { seconds }),
            Repr::Text(t) if t == DID_NOT_RECOVER => Ok(Recovery::DidNotRecover),
            Repr::Text(t) => Err(serde::de::Error::custom(format!(
                "recovery must be a number of seconds or {DID_NOT_RECOVER:?}, not {t:?}"
            ))),
        }
    }
}

/// Recovery time (MTTR): from `fault_end_s` to the START of the first run of
/// [`RECOVERY_WINDOWS`] consecutive one-second windows whose success rate is at least
/// [`RECOVERY_FRACTION`] × `baseline_rate`.
///
/// - Only windows that start at or after the fault's end count (a run that began during
///   the fault does not), and the whole run must lie within the recovery phase: its last
///   window must end by `recovery_end_s`. Otherwise [`Recovery::DidNotRecover`].
/// - A window with nothing issued, or missing from the timeline, is not healthy: there is
///   no evidence the system served anyone (with an open-loop generator it means the
///   generator itself stalled), so it breaks the run.
/// - The comparison allows 1e-9 of floating-point slack, so a window exactly at the
///   threshold counts.
pub fn recovery(
    timeline: &[Window],
    fault_end_s: f64,
    baseline_rate: f64,
    recovery_end_s: f64,
) -> Recovery {
    let threshold = RECOVERY_FRACTION * baseline_rate;
    let healthy: BTreeMap<u32, bool> = timeline
        .iter()
        .map(|w| {
            let ok = w.success_rate().is_some_and(|r| r >= threshold - 1e-9);
            (w.second, ok)
        })
        .collect();
    // Windows past the timeline's last second are missing, hence unhealthy.
    let Some(&last) = healthy.keys().next_back() else {
        return Recovery::DidNotRecover;
    };
    let mut start = fault_end_s.max(0.0).ceil() as u32;
    while start + RECOVERY_WINDOWS - 1 <= last
        && f64::from(start + RECOVERY_WINDOWS) <= recovery_end_s
    {
        match (start..start + RECOVERY_WINDOWS).find(|s| !healthy.get(s).copied().unwrap_or(false))
        {
            // Every window of the run is healthy.
            None => {
                return Recovery::Recovered {
                    seconds: f64::from(start) - fault_end_s,
                };
            }
            // No run can contain the unhealthy window: restart just after it.
            Some(bad) => start = bad + 1,
        }
    }
    Recovery::DidNotRecover
}

// ---------------------------------------------------------------------------------------
// Confidence intervals
// ---------------------------------------------------------------------------------------

/// Mean of trials and the half width of its 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    /// `t(0.975, n−1) × s / √n`; `None` for a single value (no spread to estimate).
    pub half_width: Option<f64>,
    pub n: usize,
}

/// Two-sided 95 % Student t quantiles `t(0.975, df)` for df = 1..=30.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// `t(0.975, df)`: exact table values up to 30 degrees of freedom; beyond, the value of the
/// nearest tabulated df below (40, 60, 120, then the normal 1.960), which errs wide.
pub fn t_975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T_975[df - 1],
        31..=39 => 2.042,
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.960,
    }
}

/// Mean and 95 % confidence interval (Student t, n−1 degrees of freedom, sample standard
/// deviation) of `values`. Non-finite values are left out; `None` when none remain.
pub fn ci95(values: &[f64]) -> Option<Interval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let half_width = (n > 1).then(|| {
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t_975(n - 1) * var.sqrt() / (n as f64).sqrt()
    });
    Some(Interval {
        mean,
        half_width,
        n,
    })
}

impl Interval {
    /// `94.1 % ± 1.2` with `decimals` = 1 and `unit` = `" %"`; a single value is written
    /// `94.1 % (n = 1)`, with no interval.
    pub fn format(&self, decimals: usize, unit: &str) -> String {
        match self.half_width {
            Some(hw) => format!("{:.*}{unit} ± {:.*}", decimals, self.mean, decimals, hw),
            None => format!("{:.*}{unit} (n = 1)", decimals, self.mean),
        }
    }

    /// The same interval with mean and half width multiplied by `k` (fractions to %).
    pub fn scaled(&self, k: f64) -> Interval {
        Interval {
            mean: self.mean * k,
            half_width: self.half_width.map(|h| h * k),
            n: self.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Windows of 100 requests each, `succeeded[i]` of them OK, from second 0.
    fn timeline(succeeded: &[u64]) -> Vec<Window> {
        succeeded
            .iter()
            .enumerate()
            .map(|(i, &s)| Window {
                second: i as u32,
                issued: 100,
                succeeded: s,
                p95_ms: Some(10.0),
            })
            .collect()
    }

    #[test]
    fn parses_openmetrics_with_escapes_histograms_exemplars() {
        let text = r#"# HELP rpc_server_requests gRPC requests received.
# TYPE rpc_server_requests counter
rpc_server_requests_total{service="payments",method="/shop.v1.Payments/Charge"} 12
odd_total{service="x",msg="a \"quoted\" \\ back\nslash",} 3.5 1700000000
# TYPE rpc_server_duration_seconds histogram
rpc_server_duration_seconds_sum{service="payments"} 0.25
rpc_server_duration_seconds_count{service="payments"} 4
rpc_server_duration_seconds_bucket{le="0.001",service="payments"} 1
rpc_server_duration_seconds_bucket{le="+Inf",service="payments"} 4 # {trace_id="abc"} 0.2
up 1
nan_gauge NaN
# EOF
"#;
        let s = parse_prometheus(text).unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(s[0].name, "rpc_server_requests_total");
        assert_eq!(s[0].label("method"), Some("/shop.v1.Payments/Charge"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("msg"), Some("a \"quoted\" \\ back\nslash"));
        assert_eq!(s[1].value, 3.5);
        assert_eq!(s[5].label("le"), Some("+Inf"));
        assert_eq!(s[5].value, 4.0);
        assert_eq!(s[6].labels, BTreeMap::new());
        assert!(s[7].value.is_nan());
        assert_eq!(sum(&s, "rpc_server_duration_seconds_bucket", &[]), 5.0);
        assert_eq!(
            sum(&s, "rpc_server_duration_seconds_bucket", &[("le", "0.001")]),
            1.0
        );
        assert_eq!(sum(&s, "absent_total", &[]), 0.0);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse_prometheus("ok 1\n\nbroken{a=\"x\" 2\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = parse_prometheus("a_total{k=\"v\"} twelve").unwrap_err();
        assert_eq!(err.reason, "bad sample value");
        assert!(parse_prometheus("x{k=unquoted} 1").is_err());
        assert!(parse_prometheus("lonely").is_err());
    }

    /// The parser reads what the services really serve: prometheus-client's encoder with
    /// the per-service label, a label value needing escapes, and a histogram.
    #[test]
    fn parses_real_prometheus_client_output() {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::registry::Registry;
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Borrowed("payments"),
            )]
            .into_iter(),
        );
        let server = lab_runtime::metrics::ServerMetrics::new(&mut registry);
        let _ = server.requests(CHARGE);
        let family: Family<Vec<(String, String)>, Counter> = Family::default();
        registry.register("odd", "label escapes", family.clone());
        family
            .get_or_create(&vec![("why".into(), "say \"hi\"\\\n".into())])
            .inc_by(7);
        let hist = lab_runtime::metrics::latency_histogram();
        hist.observe(0.003);
        registry.register("lat_seconds", "a histogram", hist);
        let text = lab_runtime::metrics::render(&registry);
        let s = parse_prometheus(&text).unwrap();
        assert_eq!(
            s.iter()
                .find(|x| x.name == SERVER_REQUESTS)
                .map(|x| x.labels.clone()),
            Some(labels(&[("service", "payments"), ("method", CHARGE)]))
        );
        assert_eq!(sum(&s, "odd_total", &[("why", "say \"hi\"\\\n")]), 7.0);
        assert_eq!(
            sum(&s, "lat_seconds_count", &[("service", "payments")]),
            1.0
        );
        assert_eq!(sum(&s, "lat_seconds_bucket", &[("le", "+Inf")]), 1.0);
        assert_eq!(sum(&s, "lat_seconds_bucket", &[("le", "0.002")]), 0.0);
        assert_eq!(sum(&s, "lat_seconds_bucket", &[("le", "0.004")]), 1.0);
    }

    #[test]
    fn counter_deltas_subtract_handle_resets_and_keep_gauges() {
        let before = parse_prometheus(
            "a_total{k=\"1\"} 10\na_total{k=\"2\"} 50\nstate{hop=\"p\"} 1\nh_bucket{le=\"1\"} 3\n",
        )
        .unwrap();
        let after = parse_prometheus(
            "a_total{k=\"1\"} 25\na_total{k=\"2\"} 7\na_total{k=\"3\"} 4\nstate{hop=\"p\"} 0\nh_bucket{le=\"1\"} 8\n",
        )
        .unwrap();
        let d = counter_deltas(&before, &after);
        assert_eq!(sum(&d, "a_total", &[("k", "1")]), 15.0);
        // Reset (the process restarted): the after value.
        assert_eq!(sum(&d, "a_total", &[("k", "2")]), 7.0);
        // New series: from 0.
        assert_eq!(sum(&d, "a_total", &[("k", "3")]), 4.0);
        // Gauge: the after value.
        assert_eq!(sum(&d, "state", &[]), 0.0);
        assert_eq!(sum(&d, "h_bucket", &[]), 5.0);
    }

    /// Two services' literal scrapes (gateway and payments are enough for the hops they
    /// name; the others are absent and give `None`, never NaN).
    #[test]
    fn amplification_per_hop_end_to_end_and_client() {
        let gateway = r#"
rpc_server_requests_total{service="gateway",method="/shop.v1.Gateway/PlaceOrder"} 120
rpc_server_requests_total{service="gateway",method="/grpc.health.v1.Health/Check"} 999
resilience_client_requests_total{service="gateway",hop="orders"} 100
resilience_client_attempts_total{service="gateway",hop="orders"} 260
"#;
        let orders = r#"
rpc_server_requests_total{service="orders",method="/shop.v1.Orders/CreateOrder"} 250
rpc_server_requests_total{service="orders",method="/shop.v1.Orders/GetOrder"} 10
rpc_server_requests_total{service="orders",method="/lab.v1.Audit/Snapshot"} 3
resilience_client_requests_total{service="orders",hop="payments"} 200
resilience_client_requests_total{service="orders",hop="inventory"} 0
"#;
        let payments = r#"
rpc_server_requests_total{service="payments",method="/shop.v1.Payments/Charge"} 520
rpc_server_requests_total{service="payments",method="/shop.v1.Payments/GetCharge"} 40
"#;
        let mut all = parse_prometheus(gateway).unwrap();
        all.extend(parse_prometheus(orders).unwrap());
        all.extend(parse_prometheus(payments).unwrap());
        let a = Amplification::from_samples(&all, 100);
        // gateway -> orders: (250 + 10) / 100; the Audit call is not the hop's.
        assert_eq!(a.per_hop["orders"], Some(2.6));
        // orders -> payments: 520 / 200.
        assert_eq!(a.per_hop["payments"], Some(2.6));
        // Zero and missing denominators.
        assert_eq!(a.per_hop["inventory"], None);
        assert_eq!(a.per_hop["notifications"], None);
        assert_eq!(a.end_to_end, Some(5.2));
        assert_eq!(a.client, Some(1.2));
        assert_eq!(a.counts["payments"].first_attempts, 200.0);
        assert_eq!(a.counts["payments"].attempts_received, 520.0);
        let none = Amplification::from_samples(&all, 0);
        assert_eq!((none.end_to_end, none.client), (None, None));
    }

    #[test]
    fn time_not_closed_integrates_each_sample_until_the_next() {
        // closed 0-1, open 1-2.5, closed 2.5-3, open 3-end(4).
        let samples = [(0.0, false), (1.0, true), (2.5, false), (3.0, true)];
        assert!((time_not_closed(&samples, 4.0) - 2.5).abs() < 1e-9);
        // Samples past the end count up to the end only.
        assert!((time_not_closed(&samples, 2.0) - 1.0).abs() < 1e-9);
        assert_eq!(time_not_closed(&[], 10.0), 0.0);
        assert_eq!(time_not_closed(&[(0.0, false), (5.0, false)], 10.0), 0.0);
    }

    #[test]
    fn any_breaker_not_closed_reads_the_state_gauge() {
        let closed = parse_prometheus(
            "resilience_breaker_state{service=\"orders\",hop=\"payments\"} 0\nresilience_breaker_transitions_total{hop=\"payments\",from=\"closed\",to=\"open\"} 3\n",
        )
        .unwrap();
        assert!(!any_breaker_not_closed(&closed));
        let half_open =
            parse_prometheus("resilience_breaker_state{service=\"orders\",hop=\"inventory\"} 2\n")
                .unwrap();
        assert!(any_breaker_not_closed(&half_open));
    }

    #[test]
    fn breaker_opens_and_rejections() {
        let s = parse_prometheus(
            r#"
resilience_breaker_transitions_total{service="orders",hop="payments",from="closed",to="open"} 2
resilience_breaker_transitions_total{service="orders",hop="payments",from="half_open",to="open"} 1
resilience_breaker_transitions_total{service="orders",hop="payments",from="open",to="half_open"} 3
resilience_breaker_rejections_total{service="orders",hop="payments"} 40
resilience_bulkhead_rejections_total{service="orders",hop="payments"} 5
resilience_bulkhead_rejections_total{service="orders",hop="inventory"} 6
resilience_shed_total{service="gateway"} 7
resilience_adaptive_rejections_total{service="orders",hop="payments"} 8
"#,
        )
        .unwrap();
        assert_eq!(breaker_opens(&s), 3);
        assert_eq!(
            Rejections::from_samples(&s),
            Rejections {
                bulkhead: 11,
                shed: 7,
                adaptive: 8,
                breaker: 40
            }
        );
    }

    #[test]
    fn invariants_from_id_sets_and_counters() {
        let confirmed = set(&["o1", "o2", "o3", "o4"]);
        let delivered = set(&["o1", "o3", "o9"]);
        assert_eq!(lost_events(&confirmed, &delivered), 2);
        let open = set(&["o1", "o5", "o6"]);
        assert_eq!(orphaned_reservations(&open, &confirmed), 2);

        let mut audits = Audits::default();
        audits
            .orders
            .ids
            .insert("confirmed_order_ids".into(), confirmed);
        audits.orders.counters.extend([
            ("keys_with_duplicate_orders".into(), 3),
            ("duplicate_orders".into(), 4),
        ]);
        audits.payments.counters.extend([
            ("orders_charged_more_than_once".into(), 5),
            ("duplicate_charges".into(), 6),
            ("charges_after_deadline".into(), 9),
        ]);
        audits
            .notifications
            .counters
            .insert("events_received_more_than_once".into(), 7);
        audits
            .notifications
            .ids
            .insert("delivered_order_ids".into(), delivered);
        audits
            .inventory
            .ids
            .insert("open_reservation_order_ids".into(), open);
        let inv = Invariants::from_audits(&audits);
        assert_eq!(
            inv,
            Invariants {
                duplicates: Duplicates {
                    orders: 3,
                    extra_orders: 4,
                    charges: 5,
                    extra_charges: 6,
                    deliveries: 7
                },
                lost_events: 2,
                orphaned_reservations: 2,
                wasted_charges: 9,
            }
        );
    }

    #[test]
    fn audit_from_snapshot_response() {
        let mut resp = SnapshotResponse {
            service: "orders".into(),
            ..Default::default()
        };
        resp.counters.insert("confirmed_orders".into(), 2);
        resp.ids.insert(
            "confirmed_order_ids".into(),
            lab_proto::lab::v1::IdList {
                ids: vec!["b".into(), "a".into(), "a".into()],
            },
        );
        let a = Audit::from(&resp);
        assert_eq!(a.counter("confirmed_orders"), 2);
        assert_eq!(a.counter("absent"), 0);
        assert_eq!(a.id_set("confirmed_order_ids"), set(&["a", "b"]));
    }

    #[test]
    fn baseline_pools_the_pre_fault_windows() {
        // Seconds 0..3 are before a fault starting at 3.0: (90 + 100 + 80) / 300.
        let t = timeline(&[90, 100, 80, 0, 0]);
        assert_eq!(baseline_rate(&t, 3.0), Some(0.9));
        // A fault starting mid-second excludes the window it starts in.
        assert_eq!(baseline_rate(&t, 2.5), Some(0.95));
        assert_eq!(baseline_rate(&t, 0.0), None);
        assert_eq!(baseline_rate(&[], 10.0), None);
    }

    #[test]
    fn mttr_is_fault_end_to_start_of_first_five_healthy_windows() {
        // Baseline 1.0, threshold 0.95. Fault ends at 10. Seconds 10..12 bad, 12 good,
        // 13 bad (breaks that run), then 14..=18 all >= 95: MTTR = 14 − 10 = 4 s.
        let mut ok = vec![100; 10];
        ok.extend([0, 50, 99, 94, 95, 100, 96, 97, 98, 20]);
        let t = timeline(&ok);
        assert_eq!(
            recovery(&t, 10.0, 1.0, 20.0),
            Recovery::Recovered { seconds: 4.0 }
        );
        // Threshold is relative to the baseline: with baseline 0.9 (threshold 0.855) the
        // 94 at second 13 is healthy, so the run starts at 12.
        assert_eq!(
            recovery(&t, 10.0, 0.9, 20.0),
            Recovery::Recovered { seconds: 2.0 }
        );
        // Fault ending mid-second: the run may only start at 12 or later; 11.5 -> 14 = 2.5.
        assert_eq!(
            recovery(&t, 11.5, 1.0, 20.0),
            Recovery::Recovered { seconds: 2.5 }
        );
        // Healthy right at the fault's end: 0 s.
        assert_eq!(
            recovery(&t, 14.0, 1.0, 20.0),
            Recovery::Recovered { seconds: 0.0 }
        );
    }

    #[test]
    fn did_not_recover_when_no_run_fits_the_recovery_phase() {
        let mut ok = vec![100; 10];
        ok.extend([0, 50, 99, 94, 95, 100, 96, 97, 98, 20]);
        let t = timeline(&ok);
        // The run 14..=18 ends at 19: a recovery phase ending at 18.9 cannot hold it.
        assert_eq!(recovery(&t, 10.0, 1.0, 18.9), Recovery::DidNotRecover);
        assert_eq!(
            recovery(&t, 10.0, 1.0, 19.0),
            Recovery::Recovered { seconds: 4.0 }
        );
        // Healthy windows before the fault's end do not count.
        assert_eq!(
            recovery(&timeline(&[100; 10]), 10.0, 1.0, 30.0),
            Recovery::DidNotRecover
        );
    }

    #[test]
    fn empty_or_missing_windows_break_a_run() {
        let mut t = timeline(&[100; 20]);
        // Second 12 issued nothing; second 15 is missing from the timeline.
        t[12].issued = 0;
        t[12].succeeded = 0;
        t.retain(|w| w.second != 15);
        // Runs from 10 and 13 are broken; 16..=19 is only 4 long; the timeline ends at 20.
        assert_eq!(recovery(&t, 10.0, 1.0, 20.0), Recovery::DidNotRecover);
        t.push(Window {
            second: 20,
            issued: 5,
            succeeded: 5,
            p95_ms: None,
        });
        assert_eq!(
            recovery(&t, 10.0, 1.0, 25.0),
            Recovery::Recovered { seconds: 6.0 }
        );
    }

    #[test]
    fn recovery_serializes_as_seconds_or_did_not_recover() {
        let both = vec![
            Some(Recovery::Recovered { seconds: 4.5 }),
            Some(Recovery::DidNotRecover),
            None,
        ];
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(json, r#"[4.5,"did not recover",null]"#);
        let back: Vec<Option<Recovery>> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, both);
        assert!(serde_json::from_str::<Recovery>(r#""soon""#).is_err());
        assert_eq!(Recovery::DidNotRecover.to_string(), "did not recover");
    }

    #[test]
    fn ci95_uses_student_t() {
        let i = ci95(&[90.0, 92.0, 94.0]).unwrap();
        assert_eq!(i.n, 3);
        assert_eq!(i.mean, 92.0);
        // s = 2, t(0.975, 2) = 4.303: 4.303 × 2 / √3.
        let expected = 4.303 * 2.0 / 3f64.sqrt();
        assert!((i.half_width.unwrap() - expected).abs() < 1e-12);
        assert_eq!(i.format(1, " %"), "92.0 % ± 5.0");
        // Two values: t(0.975, 1) = 12.706, s = √2 × 0.5.
        let two = ci95(&[1.0, 2.0]).unwrap();
        assert!((two.half_width.unwrap() - 12.706 * 0.5).abs() < 1e-12);
        // One value: no interval, no NaN.
        let one = ci95(&[94.1]).unwrap();
        assert_eq!(one.half_width, None);
        assert_eq!(one.format(1, " %"), "94.1 % (n = 1)");
        // Non-finite values are left out; nothing left is None.
        assert_eq!(ci95(&[f64::NAN, 5.0]).unwrap().n, 1);
        assert_eq!(ci95(&[]), None);
        assert_eq!(t_975(30), 2.042);
        assert_eq!(t_975(45), 2.021);
        assert_eq!(t_975(5000), 1.960);
        assert_eq!(
            ci95(&[0.9, 0.92, 0.94])
                .unwrap()
                .scaled(100.0)
                .format(1, " %"),
            "92.0 % ± 5.0"
        );
    }
}
