//! What the console shows, read from the services: every poll fetches each service's
//! `/state` (breakers, bulkheads, faults, capacity) and `/metrics` (counters), and builds
//! one JSON snapshot.
//!
//! Numbers and where they come from:
//! - **requests, success rate, p95** — the gateway's server metrics for
//!   `shop.v1.Gateway/PlaceOrder` (`rpc_server_responses_total` by code, OK = success;
//!   `rpc_server_duration_seconds` histogram), so they cover *all* traffic to the gateway,
//!   not only the console's. Windowed values are differences between two polls; p95 is
//!   interpolated inside the histogram's power-of-two buckets, as Prometheus'
//!   `histogram_quantile` does.
//! - **breaker state** — `/state` `hops/<hop>/breaker` of the calling service.
//! - **trips, probes, re-opens, closes** — `resilience_breaker_transitions_total
//!   {hop,from,to}`; every increase between two polls becomes an entry of the transition
//!   log, stamped with the poll's time. A breaker that went OPEN → HALF_OPEN → CLOSED
//!   between two polls shows all three transitions even though no `/state` read saw
//!   HALF_OPEN.
//! - **retries/s, attempts/s** — `resilience_retries_total` and
//!   `resilience_client_attempts_total` per hop, over the last window.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use lab_resilience::metric_names::{
    BREAKER_TRANSITIONS_TOTAL, CLIENT_ATTEMPTS_TOTAL, RETRIES_TOTAL,
};
use lab_runtime::metrics::{SERVER_DURATION_BUCKET, SERVER_RESPONSES_TOTAL};

use crate::measure::{PLACE_ORDER, increase};
use crate::observe::prometheus::{Sample, sum};
use crate::observe::scrape;
use crate::stack::file::ServiceAddrs;

/// How long one `/state` or `/metrics` read may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The window of the headline rates (requests/s, success rate, p95).
pub const WINDOW: Duration = Duration::from_secs(5);
/// The window of each sparkline point.
pub const POINT_WINDOW: Duration = Duration::from_secs(2);
/// Sparkline length, in points (one per poll).
pub const HISTORY_POINTS: usize = 120;
/// Transition log length.
pub const TRANSITION_LOG: usize = 40;

/// One service's `/state` and `/metrics`, or why they could not be read.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub service: String,
    pub error: Option<String>,
    pub state: Value,
    pub samples: Vec<Sample>,
}

/// Reads one service's side port.
pub async fn scrape(addrs: &ServiceAddrs) -> Scrape {
    let (state, metrics) = tokio::join!(
        scrape::get(&addrs.http, "/state", SCRAPE_TIMEOUT),
        scrape::metrics(&addrs.http, SCRAPE_TIMEOUT)
    );
    let mut errors = Vec::new();
    let state = match state.and_then(|b| serde_json::from_str(&b).map_err(|e| e.to_string())) {
        Ok(v) => v,
        Err(e) => {
            errors.push(e);
            Value::Null
        }
    };
    let samples = match metrics {
        Ok(s) => s,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    Scrape {
        service: addrs.service.clone(),
        error: (!errors.is_empty())
            .then(|| format!("{} ({}): {}", addrs.service, addrs.http, errors.join("; "))),
        state,
        samples,
    }
}

/// Cumulative counters at one poll.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    pub at: Option<Instant>,
    /// PlaceOrder answers at the gateway, any code.
    pub requests: f64,
    /// … with code OK.
    pub ok: f64,
    /// PlaceOrder latency histogram at the gateway: (upper bound in seconds, cumulative count).
    pub buckets: Vec<(f64, f64)>,
    /// Per (service, hop): retries and attempts.
    pub retries: BTreeMap<(String, String), f64>,
    pub attempts: BTreeMap<(String, String), f64>,
}

impl Tick {
    /// The gateway's PlaceOrder counters and every hop's retry counters.
    pub fn from_scrapes(scrapes: &[Scrape], at: Instant) -> Tick {
        let mut tick = Tick {
            at: Some(at),
            ..Tick::default()
        };
        for s in scrapes {
            if s.service == "gateway" {
                let method = [("method", PLACE_ORDER)];
                tick.requests = sum(&s.samples, SERVER_RESPONSES_TOTAL, &method);
                tick.ok = sum(
                    &s.samples,
                    SERVER_RESPONSES_TOTAL,
                    &[("method", PLACE_ORDER), ("code", "OK")],
                );
                tick.buckets = s
                    .samples
                    .iter()
                    .filter(|x| {
                        x.name == SERVER_DURATION_BUCKET && x.label("method") == Some(PLACE_ORDER)
                    })
                    .filter_map(|x| Some((parse_le(x.label("le")?)?, x.value)))
                    .collect();
                tick.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            for x in &s.samples {
                let map = match x.name.as_str() {
                    n if n == RETRIES_TOTAL => &mut tick.retries,
                    n if n == CLIENT_ATTEMPTS_TOTAL => &mut tick.attempts,
                    _ => continue,
                };
                if let Some(hop) = x.label("hop") {
                    *map.entry((s.service.clone(), hop.to_string())).or_default() += x.value;
                }
            }
        }
        tick
    }
}

fn parse_le(le: &str) -> Option<f64> {
    if le == "+Inf" {
        Some(f64::INFINITY)
    } else {
        le.parse().ok()
    }
}

/// Rates between two ticks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub seconds: f64,
    pub requests: f64,
    pub ok: f64,
    pub rps: f64,
    /// OK / requests; none without requests.
    pub success_rate: Option<f64>,
    /// 95th percentile latency in ms; none without requests.
    pub p95_ms: Option<f64>,
}

pub fn window(older: &Tick, newer: &Tick) -> Window {
    let seconds = match (older.at, newer.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let requests = increase(older.requests, newer.requests);
    let ok = increase(older.ok, newer.ok).min(requests);
    let deltas: Vec<(f64, f64)> = newer
        .buckets
        .iter()
        .map(|&(le, n)| {
            let before = older
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |b| b.1);
            (le, increase(before, n))
        })
        .collect();
    Window {
        seconds,
        requests,
        ok,
        rps: if seconds > 0.0 {
            requests / seconds
        } else {
            0.0
        },
        success_rate: (requests > 0.0).then(|| ok / requests),
        p95_ms: quantile(&deltas, 0.95).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of a cumulative histogram (bucket upper bounds ascending), with linear
/// interpolation inside the bucket, as Prometheus' `histogram_quantile`. In the `+Inf`
/// bucket the answer is the highest finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let share = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// (service, hop, from, to) of a breaker transition counter.
type TransitionKey = (String, String, String, String);

/// A breaker changed state between two polls (read from its transition counter).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionEvent {
    /// Wall-clock time of the poll that saw it (ms since the epoch).
    pub at_ms: i64,
    pub service: String,
    pub hop: String,
    pub from: String,
    pub to: String,
    /// How many times it happened since the previous poll.
    pub count: u64,
}

/// The breaker transition counters of every service.
pub fn transition_counters(scrapes: &[Scrape]) -> BTreeMap<TransitionKey, f64> {
    let mut counters = BTreeMap::new();
    for s in scrapes {
        for x in &s.samples {
            if x.name != BREAKER_TRANSITIONS_TOTAL {
                continue;
            }
            if let (Some(hop), Some(from), Some(to)) =
                (x.label("hop"), x.label("from"), x.label("to"))
            {
                counters.insert(
                    (s.service.clone(), hop.into(), from.into(), to.into()),
                    x.value,
                );
            }
        }
    }
    counters
}

/// The transitions between two readings of the counters, in the state machine's order
/// (trip, probe, then re-open or close) so a full cycle inside one poll reads naturally.
pub fn transitions_between(
    before: &BTreeMap<TransitionKey, f64>,
    after: &BTreeMap<TransitionKey, f64>,
    at_ms: i64,
) -> Vec<TransitionEvent> {
    let rank = |from: &str, to: &str| match (from, to) {
        ("closed", "open") => 0,
        ("open", "half_open") => 1,
        ("half_open", "open") => 2,
        _ => 3,
    };
    let mut events: Vec<TransitionEvent> = after
        .iter()
        .filter_map(|(key, &value)| {
            let grew = increase(before.get(key).copied().unwrap_or(0.0), value);
            (grew >= 1.0).then(|| TransitionEvent {
                at_ms,
                service: key.0.clone(),
                hop: key.1.clone(),
                from: key.2.clone(),
                to: key.3.clone(),
                count: grew as u64,
            })
        })
        .collect();
    events.sort_by_key(|e| (e.service.clone(), e.hop.clone(), rank(&e.from, &e.to)));
    events
}

/// Picks one per-hop counter map out of a tick.
type HopCounter<'a> = &'a dyn Fn(&Tick) -> &BTreeMap<(String, String), f64>;

/// One sparkline point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub at_ms: i64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// The polling state: the counters of recent polls, the sparklines and the transition log.
pub struct Poller {
    services: Vec<ServiceAddrs>,
    ticks: VecDeque<Tick>,
    history: VecDeque<Point>,
    transitions: Option<BTreeMap<TransitionKey, f64>>,
    events: VecDeque<TransitionEvent>,
}

impl Poller {
    pub fn new(services: Vec<ServiceAddrs>) -> Self {
        Self {
            services,
            ticks: VecDeque::new(),
            history: VecDeque::new(),
            transitions: None,
            events: VecDeque::new(),
        }
    }

    /// Reads every service and returns the snapshot (the `console` part is added by the
    /// caller).
    pub async fn poll(&mut self) -> Value {
        let scrapes = futures::future::join_all(self.services.iter().map(scrape)).await;
        self.build(&scrapes, Instant::now(), lab_runtime::now_ms())
    }

    /// The snapshot of one poll's scrapes (pure apart from the poller's own memory).
    pub fn build(&mut self, scrapes: &[Scrape], now: Instant, now_ms: i64) -> Value {
        let tick = Tick::from_scrapes(scrapes, now);
        // Transitions: only increases seen by this console; the first poll is the baseline.
        let counters = transition_counters(scrapes);
        if let Some(before) = &self.transitions {
            for e in transitions_between(before, &counters, now_ms) {
                self.events.push_back(e);
            }
            while self.events.len() > TRANSITION_LOG {
                self.events.pop_front();
            }
        }
        // A service that could not be read keeps its last counters (no spurious events).
        let mut merged = self.transitions.take().unwrap_or_default();
        merged.extend(counters.clone());
        self.transitions = Some(merged);

        let older = |span: Duration| {
            self.ticks
                .iter()
                .find(|t| {
                    t.at.is_some_and(|a| now.saturating_duration_since(a) <= span)
                })
                .or(self.ticks.back())
                .cloned()
                .unwrap_or_else(|| tick.clone())
        };
        let headline = window(&older(WINDOW), &tick);
        let point_window = window(&older(POINT_WINDOW), &tick);
        if point_window.seconds > 0.0 {
            self.history.push_back(Point {
                at_ms: now_ms,
                rps: point_window.rps,
                success_rate: point_window.success_rate,
                p95_ms: point_window.p95_ms,
            });
            while self.history.len() > HISTORY_POINTS {
                self.history.pop_front();
            }
        }
        let retry_window = older(WINDOW);
        self.ticks.push_back(tick.clone());
        while self.ticks.len() > 2 * HISTORY_POINTS {
            self.ticks.pop_front();
        }

        let mut edges = Vec::new();
        let mut trips_total = 0.0;
        for s in scrapes {
            let Some(hops) = s.state.get("hops").and_then(Value::as_object) else {
                continue;
            };
            for (hop, view) in hops {
                let key = (s.service.clone(), hop.clone());
                let per_s = |map: HopCounter| {
                    let secs = window(&retry_window, &tick).seconds;
                    let grew = increase(
                        map(&retry_window).get(&key).copied().unwrap_or(0.0),
                        map(&tick).get(&key).copied().unwrap_or(0.0),
                    );
                    if secs > 0.0 { grew / secs } else { 0.0 }
                };
                let count = |from: &str, to: &str| {
                    counters
                        .get(&(s.service.clone(), hop.clone(), from.into(), to.into()))
                        .copied()
                        .unwrap_or(0.0)
                };
                trips_total += count("closed", "open");
                edges.push(json!({
                    "from": s.service,
                    "to": hop,
                    "breaker": view.get("breaker").cloned().unwrap_or(Value::Null),
                    "bulkhead": view.get("bulkhead").cloned().unwrap_or(Value::Null),
                    "retries_per_s": per_s(&|t| &t.retries),
                    "attempts_per_s": per_s(&|t| &t.attempts),
                    "transitions": {
                        "trips": count("closed", "open"),
                        "probes": count("open", "half_open"),
                        "reopens": count("half_open", "open"),
                        "closes": count("half_open", "closed"),
                    },
                }));
            }
        }
        let services: Vec<Value> = scrapes
            .iter()
            .map(|s| {
                let st = &s.state;
                json!({
                    "name": s.service,
                    "up": s.error.is_none(),
                    "error": s.error,
                    "profile": st.get("profile"),
                    "uptime_s": st.get("uptime_s"),
                    "faults": st.get("faults").cloned().unwrap_or(json!([])),
                    "capacity": st.get("capacity"),
                    "shed": st.pointer("/server/shed"),
                    "adaptive": st.pointer("/server/adaptive"),
                })
            })
            .collect();
        json!({
            "at_ms": now_ms,
            "services": services,
            "edges": edges,
            "totals": {
                "requests": tick.requests,
                "ok": tick.ok,
                "success_rate": (tick.requests > 0.0).then(|| tick.ok / tick.requests),
                "window": headline,
                "trips": trips_total,
            },
            "history": self.history,
            "transitions": self.events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::prometheus::parse_prometheus;

    fn scrape(service: &str, metrics: &str, state: Value) -> Scrape {
        Scrape {
            service: service.into(),
            error: None,
            state,
            samples: parse_prometheus(metrics).unwrap(),
        }
    }

    fn gateway(requests_ok: u64, failed: u64, fast: u64, slow: u64) -> Scrape {
        let total = fast + slow;
        scrape(
            "gateway",
            &format!(
                "rpc_server_responses_total{{service=\"gateway\",method=\"{PLACE_ORDER}\",code=\"OK\"}} {requests_ok}\n\
                 rpc_server_responses_total{{service=\"gateway\",method=\"{PLACE_ORDER}\",code=\"UNAVAILABLE\"}} {failed}\n\
                 rpc_server_duration_seconds_bucket{{service=\"gateway\",le=\"0.064\",method=\"{PLACE_ORDER}\"}} {fast}\n\
                 rpc_server_duration_seconds_bucket{{service=\"gateway\",le=\"0.128\",method=\"{PLACE_ORDER}\"}} {total}\n\
                 rpc_server_duration_seconds_bucket{{service=\"gateway\",le=\"+Inf\",method=\"{PLACE_ORDER}\"}} {total}\n"
            ),
            json!({"service": "gateway"}),
        )
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let b = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&b, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.95).unwrap() - 0.19).abs() < 1e-9);
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.95), None);
        // Everything above the last finite bound: that bound.
        assert_eq!(
            quantile(&[(0.1, 0.0), (f64::INFINITY, 4.0)], 0.95),
            Some(0.1)
        );
    }

    #[test]
    fn windows_are_differences_between_polls() {
        let t0 = Instant::now();
        let a = Tick::from_scrapes(&[gateway(10, 0, 10, 0)], t0);
        let b = Tick::from_scrapes(&[gateway(18, 2, 10, 10)], t0 + Duration::from_secs(2));
        let w = window(&a, &b);
        assert_eq!((w.requests, w.ok, w.rps), (10.0, 8.0, 5.0));
        assert_eq!(w.success_rate, Some(0.8));
        // All 10 new answers fell in (64 ms, 128 ms]: p95 interpolates inside it.
        let p95 = w.p95_ms.unwrap();
        assert!((p95 - (64.0 + 64.0 * 0.95)).abs() < 1e-6, "{p95}");
        // A restarted gateway (counters back near zero) is not a negative rate.
        let c = Tick::from_scrapes(&[gateway(1, 0, 1, 0)], t0 + Duration::from_secs(3));
        assert_eq!(window(&b, &c).requests, 1.0);
    }

    fn breaker_metrics(trip: u64, probe: u64, close: u64) -> String {
        format!(
            "resilience_breaker_transitions_total{{service=\"orders\",hop=\"payments\",from=\"half_open\",to=\"closed\"}} {close}\n\
             resilience_breaker_transitions_total{{service=\"orders\",hop=\"payments\",from=\"open\",to=\"half_open\"}} {probe}\n\
             resilience_breaker_transitions_total{{service=\"orders\",hop=\"payments\",from=\"closed\",to=\"open\"}} {trip}\n\
             resilience_breaker_transitions_total{{service=\"orders\",hop=\"payments\",from=\"half_open\",to=\"open\"}} 0\n\
             resilience_retries_total{{service=\"orders\",hop=\"payments\"}} {}\n",
            trip * 4
        )
    }

    #[test]
    fn transitions_come_from_counter_increases_in_state_machine_order() {
        let mut poller = Poller::new(Vec::new());
        let state =
            json!({"hops": {"payments": {"breaker": {"state": "closed"}, "bulkhead": null}}});
        let t0 = Instant::now();
        // Counts before the console started are not events.
        let first = poller.build(
            &[scrape("orders", &breaker_metrics(1, 1, 1), state.clone())],
            t0,
            1000,
        );
        assert_eq!(first["transitions"], json!([]));
        assert_eq!(first["edges"][0]["transitions"]["trips"], json!(1.0));
        // A whole cycle between two polls: three events, trip first.
        let second = poller.build(
            &[scrape("orders", &breaker_metrics(2, 2, 2), state.clone())],
            t0 + Duration::from_millis(500),
            1500,
        );
        let events = second["transitions"].as_array().unwrap();
        let seen: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "closed")
            ]
        );
        assert!(
            events
                .iter()
                .all(|e| e["at_ms"] == 1500 && e["hop"] == "payments")
        );
        assert_eq!(second["totals"]["trips"], json!(2.0));
        // 4 retries over 0.5 s.
        assert_eq!(second["edges"][0]["retries_per_s"], json!(8.0));
        // A service that could not be read produces no events and forgets nothing.
        let down = Scrape {
            service: "orders".into(),
            error: Some("down".into()),
            state: Value::Null,
            samples: Vec::new(),
        };
        let third = poller.build(&[down], t0 + Duration::from_secs(1), 2000);
        assert_eq!(third["transitions"].as_array().unwrap().len(), 3);
        assert_eq!(third["services"][0]["up"], json!(false));
        let fourth = poller.build(
            &[scrape("orders", &breaker_metrics(2, 2, 2), state)],
            t0 + Duration::from_millis(1500),
            2500,
        );
        assert_eq!(fourth["transitions"].as_array().unwrap().len(), 3);
    }
}
