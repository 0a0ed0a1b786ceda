//! What the admission patterns did: breaker openings and time not closed, and the calls
//! each pattern refused.

use serde::{Deserialize, Serialize};

use lab_resilience::metric_names as names;

use crate::observe::prometheus::{Sample, sum};

/// Breaker openings: `resilience_breaker_transitions_total{to="open"}` over every service
/// and hop (from closed, and again from half-open).
pub fn breaker_opens(deltas: &[Sample]) -> u64 {
    sum(deltas, names::BREAKER_TRANSITIONS_TOTAL, &[("to", "open")]).round() as u64
}

/// Whether any breaker in a scrape is not closed: `resilience_breaker_state` is 1 (open)
/// or 2 (half-open) for some service and hop.
pub fn any_breaker_not_closed(samples: &[Sample]) -> bool {
    samples
        .iter()
        .any(|s| s.name == names::BREAKER_STATE && s.value != 0.0)
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
            bulkhead: total(names::BULKHEAD_REJECTIONS_TOTAL),
            shed: total(names::SHED_TOTAL),
            adaptive: total(names::ADAPTIVE_REJECTIONS_TOTAL),
            breaker: total(names::BREAKER_REJECTIONS_TOTAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::prometheus::parse_prometheus;

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
}
