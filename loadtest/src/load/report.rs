//! What a load run measured ([`LoadReport`]), how it is recorded while the run goes on
//! ([`Recorder`]), and how it is printed for people ([`LoadReport::summary`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A run whose schedule lag p99 is above this many milliseconds had a generator that could
/// not keep up: its latencies include its own delay, not only the system's.
pub const SATURATED_LAG_P99_MS: f64 = 10.0;

/// Largest value the histograms hold, in microseconds (one hour); larger ones are recorded
/// as this.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// The outcome of one `frlab load` run. Counts are of logical requests (one idempotency key
/// each) unless they say attempts; `issued = succeeded + failed + dropped`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// What each request called, as `frlab load --call` takes it (`place-order`, `health`).
    #[serde(default = "place_order")]
    pub call: String,
    /// The schedule, as `frlab load --schedule` takes it.
    pub schedule: String,
    pub duration_s: f64,
    pub deadline_ms: u64,
    pub client_retries: u32,
    pub seed: u64,
    /// Logical requests the schedule called for within the duration.
    pub issued: u64,
    /// Ended OK within the client deadline.
    pub succeeded: u64,
    /// Sent, and ended with an error or past the deadline.
    pub failed: u64,
    /// Never sent: `max_in_flight` requests were already waiting for answers.
    pub dropped: u64,
    /// Calls made, retries included.
    pub attempts: u64,
    /// Final outcome of each sent logical request by gRPC code name (`OK`, `UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED` when the client deadline passed, ...).
    pub by_code: BTreeMap<String, u64>,
    /// Successes only, from the intended send time to the answer.
    pub latency_ms: Percentiles,
    /// Every sent logical request that finished, failures included, measured the same way.
    pub all_latency_ms: Percentiles,
    /// One entry per second of the schedule, by the intended send time of the requests.
    pub timeline: Vec<SecondStats>,
    /// How late each request was sent compared with its intended time.
    pub lag_ms: Percentiles,
    /// Most requests waiting for an answer at once.
    pub max_in_flight_seen: u64,
    /// From the start of the schedule to the last answer.
    pub elapsed_s: f64,
    /// Successes per second of the schedule's duration.
    pub goodput_rps: f64,
    /// Issued requests per second of the schedule's duration.
    pub offered_rps: f64,
    /// CPU time (user + system) this process used during the run.
    pub generator_cpu_s: f64,
    /// The generator could not keep to the schedule: lag p99 above
    /// [`SATURATED_LAG_P99_MS`] or requests dropped.
    pub saturated: bool,
}

/// Milliseconds, from an HDR histogram recorded in microseconds. All zero when `count` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The requests whose intended send time fell in one second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondStats {
    /// Seconds since the start of the schedule (0 is the first).
    pub second: u32,
    pub issued: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dropped: u64,
    pub attempts: u64,
    /// Latency p95 of this second's successes; `None` when it had none.
    pub p95_ms: Option<f64>,
}

impl LoadReport {
    /// Successes / issued, 0 to 1 (0 when nothing was issued).
    pub fn success_rate(&self) -> f64 {
        ratio(self.succeeded, self.issued)
    }

    /// Attempts per sent logical request (1.0 without retries).
    pub fn attempts_per_request(&self) -> f64 {
        ratio(self.attempts, self.issued - self.dropped)
    }

    /// Why the generator counts as saturated, for the warning line; `None` when it was not.
    pub fn saturation_reason(&self) -> Option<String> {
        if !self.saturated {
            return None;
        }
        let mut reasons = Vec::new();
        if self.lag_ms.p99 > SATURATED_LAG_P99_MS {
            reasons.push(format!(
                "send lag p99 {:.1} ms > {SATURATED_LAG_P99_MS} ms",
                self.lag_ms.p99
            ));
        }
        if self.dropped > 0 {
            reasons.push(format!(
                "{} requests dropped at the in-flight cap",
                self.dropped
            ));
        }
        Some(reasons.join(", "))
    }

    /// A few aligned lines for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let ms = |v: f64| format!("{v:.1} ms");
        let _ = writeln!(
            out,
            "schedule  {} for {} s, call {}, deadline {} ms, client retries {}, seed {}",
            self.schedule,
            self.duration_s,
            self.call,
            self.deadline_ms,
            self.client_retries,
            self.seed
        );
        let _ = writeln!(
            out,
            "issued    {} logical requests ({:.1} rps offered), {} dropped",
            self.issued, self.offered_rps, self.dropped
        );
        let _ = writeln!(
            out,
            "success   {:.2} %  ({} ok, {} failed)   goodput {:.1} rps",
            self.success_rate() * 100.0,
            self.succeeded,
            self.failed,
            self.goodput_rps
        );
        let _ = writeln!(
            out,
            "attempts  {} ({:.2} per sent request)",
            self.attempts,
            self.attempts_per_request()
        );
        let l = &self.latency_ms;
        if l.count > 0 {
            let _ = writeln!(
                out,
                "latency   p50 {}  p95 {}  p99 {}  max {}  mean {}  (successes, from the \
                 intended send time)",
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                ms(l.max),
                ms(l.mean)
            );
        } else {
            let _ = writeln!(out, "latency   - (no successes)");
        }
        let a = &self.all_latency_ms;
        if a.count > l.count {
            let _ = writeln!(
                out,
                "          all finished: p50 {}  p99 {}  max {}",
                ms(a.p50),
                ms(a.p99),
                ms(a.max)
            );
        }
        let _ = writeln!(
            out,
            "generator send lag p99 {}  max {};  CPU {:.2} s over {:.1} s;  at most {} in flight",
            ms(self.lag_ms.p99),
            ms(self.lag_ms.max),
            self.generator_cpu_s,
            self.elapsed_s,
            self.max_in_flight_seen
        );
        let codes: Vec<String> = self
            .by_code
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "codes     {}",
            if codes.is_empty() {
                "-".to_string()
            } else {
                codes.join(", ")
            }
        );
        if let Some(reason) = self.saturation_reason() {
            let _ = writeln!(
                out,
                "warning: the load generator was saturated ({reason}); the latencies include \
                 its own delay. Lower the rate, raise --max-in-flight, or run it on another \
                 machine."
            );
        }
        out
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = n as f64 / d as f64;
        r
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    #[allow(clippy::cast_precision_loss)]
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

/// The final outcome of one sent logical request.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// Offset of its intended send time from the start.
    pub intended: Duration,
    /// From the intended send time to the final answer (or the deadline).
    pub latency: Duration,
    pub attempts: u32,
    /// `None` for success, else the code name of the last attempt.
    pub error: Option<&'static str>,
}

/// Accumulates a run's events; [`Recorder::finish`] turns them into a [`LoadReport`].
pub(crate) struct Recorder {
    latency: Histogram<u64>,
    all_latency: Histogram<u64>,
    lag: Histogram<u64>,
    seconds: Vec<SecondStats>,
    /// Success latencies (µs) per second, for each second's p95 (exact, 4 bytes each).
    second_latencies: Vec<Vec<u32>>,
    by_code: BTreeMap<String, u64>,
    pub issued: u64,
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dropped: u64,
    pub attempts: u64,
    pub max_in_flight_seen: u64,
}

impl Recorder {
    pub fn new(total: Duration) -> Self {
        let seconds = u32::try_from(total.as_secs() + u64::from(total.subsec_nanos() > 0))
            .unwrap_or(u32::MAX);
        Self {
            latency: histogram(),
            all_latency: histogram(),
            lag: histogram(),
            seconds: (0..seconds)
                .map(|second| SecondStats {
                    second,
                    ..SecondStats::default()
                })
                .collect(),
            second_latencies: vec![Vec::new(); seconds as usize],
            by_code: BTreeMap::new(),
            issued: 0,
            sent: 0,
            succeeded: 0,
            failed: 0,
            dropped: 0,
            attempts: 0,
            max_in_flight_seen: 0,
        }
    }

    fn second(&mut self, intended: Duration) -> &mut SecondStats {
        let i = usize::try_from(intended.as_secs())
            .unwrap_or(usize::MAX)
            .min(self.seconds.len().saturating_sub(1));
        &mut self.seconds[i]
    }

    /// The scheduler reached a request: sent `lag` late, or dropped.
    pub fn scheduled(&mut self, intended: Duration, lag: Duration, dropped: bool) {
        self.issued += 1;
        self.lag.saturating_record(micros(lag).max(1));
        let second = self.second(intended);
        second.issued += 1;
        if dropped {
            second.dropped += 1;
            self.dropped += 1;
        } else {
            self.sent += 1;
        }
    }

    pub fn in_flight(&mut self, n: u64) {
        self.max_in_flight_seen = self.max_in_flight_seen.max(n);
    }

    pub fn finished(&mut self, f: &Finished) {
        let us = micros(f.latency).max(1);
        self.attempts += u64::from(f.attempts);
        self.all_latency.saturating_record(us);
        *self
            .by_code
            .entry(f.error.unwrap_or("OK").to_string())
            .or_default() += 1;
        let index = usize::try_from(f.intended.as_secs()).unwrap_or(usize::MAX);
        let second = self.second(f.intended);
        second.attempts += u64::from(f.attempts);
        if f.error.is_none() {
            second.succeeded += 1;
            self.succeeded += 1;
            self.latency.saturating_record(us);
            if let Some(list) = self.second_latencies.get_mut(index) {
                list.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        } else {
            second.failed += 1;
            self.failed += 1;
        }
    }

    pub fn finish(mut self, spec: &RunSpec, elapsed: Duration, cpu: Duration) -> LoadReport {
        for (stats, list) in self.seconds.iter_mut().zip(&mut self.second_latencies) {
            stats.p95_ms = p95(list);
        }
        let duration_s = spec.duration.as_secs_f64();
        let per_second = |n: u64| {
            #[allow(clippy::cast_precision_loss)]
            let n = n as f64;
            if duration_s > 0.0 {
                n / duration_s
            } else {
                0.0
            }
        };
        let lag_ms = percentiles(&self.lag);
        LoadReport {
            call: spec.call.to_string(),
            schedule: spec.schedule.clone(),
            duration_s,
            deadline_ms: u64::try_from(spec.deadline.as_millis()).unwrap_or(u64::MAX),
            client_retries: spec.client_retries,
            seed: spec.seed,
            issued: self.issued,
            succeeded: self.succeeded,
            failed: self.failed,
            dropped: self.dropped,
            attempts: self.attempts,
            by_code: self.by_code,
            latency_ms: percentiles(&self.latency),
            all_latency_ms: percentiles(&self.all_latency),
            timeline: self.seconds,
            lag_ms,
            max_in_flight_seen: self.max_in_flight_seen,
            elapsed_s: elapsed.as_secs_f64(),
            goodput_rps: per_second(self.succeeded),
            offered_rps: per_second(self.issued),
            generator_cpu_s: cpu.as_secs_f64(),
            saturated: lag_ms.p99 > SATURATED_LAG_P99_MS || self.dropped > 0,
        }
    }
}

/// What the report repeats of the run's configuration.
pub(crate) struct RunSpec {
    pub call: super::Call,
    pub schedule: String,
    pub duration: Duration,
    pub deadline: Duration,
    pub client_retries: u32,
    pub seed: u64,
}

fn place_order() -> String {
    super::Call::PlaceOrder.to_string()
}

/// The 95th percentile (nearest rank) of microsecond values, in milliseconds.
fn p95(values: &mut [u32]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least 95 % of the values at or below it.
    let rank = (values.len() * 95).div_ceil(100).max(1);
    let (_, value, _) = values.select_nth_unstable(rank - 1);
    Some(f64::from(*value) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            call: crate::load::Call::PlaceOrder,
            schedule: "constant:2".into(),
            duration: Duration::from_secs(2),
            deadline: Duration::from_secs(1),
            client_retries: 1,
            seed: 7,
        }
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let mut values: Vec<u32> = (1..=100).rev().map(|v| v * 1000).collect();
        assert_eq!(p95(&mut values), Some(95.0));
        assert_eq!(p95(&mut [5000]), Some(5.0));
        assert_eq!(p95(&mut []), None);
    }

    #[test]
    fn counts_add_up_by_second_and_code() {
        let mut r = Recorder::new(Duration::from_millis(1500));
        let ms = Duration::from_millis;
        r.scheduled(ms(0), ms(1), false);
        r.scheduled(ms(500), ms(2), false);
        r.scheduled(ms(1000), ms(20), false);
        r.scheduled(ms(1400), ms(30), true);
        r.finished(&Finished {
            intended: ms(0),
            latency: ms(10),
            attempts: 1,
            error: None,
        });
        r.finished(&Finished {
            intended: ms(500),
            latency: ms(30),
            attempts: 2,
            error: None,
        });
        r.finished(&Finished {
            intended: ms(1000),
            latency: ms(1000),
            attempts: 2,
            error: Some("UNAVAILABLE"),
        });
        let report = r.finish(&spec(), Duration::from_secs(2), ms(100));
        assert_eq!(
            (
                report.issued,
                report.succeeded,
                report.failed,
                report.dropped
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(report.attempts, 5);
        assert_eq!(report.by_code["OK"], 2);
        assert_eq!(report.by_code["UNAVAILABLE"], 1);
        assert_eq!(report.timeline.len(), 2);
        let first = &report.timeline[0];
        assert_eq!(
            (first.issued, first.succeeded, first.attempts, first.p95_ms),
            (2, 2, 3, Some(30.0))
        );
        let second = &report.timeline[1];
        assert_eq!(
            (second.issued, second.failed, second.dropped, second.p95_ms),
            (2, 1, 1, None)
        );
        assert_eq!(report.latency_ms.count, 2);
        assert!((report.latency_ms.max - 30.0).abs() < 0.1);
        assert_eq!(report.all_latency_ms.count, 3);
        assert!(report.saturated, "a request was dropped");
        assert!((report.goodput_rps - 1.0).abs() < 1e-9);
        assert!((report.offered_rps - 2.0).abs() < 1e-9);
        let text = report.summary();
        assert!(text.contains("success   50.00 %"), "{text}");
        assert!(text.contains("UNAVAILABLE 1"), "{text}");
        assert!(
            text.contains("warning: the load generator was saturated"),
            "{text}"
        );
        // The JSON form reads back the same.
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<LoadReport>(&json).unwrap(), report);
    }
}
