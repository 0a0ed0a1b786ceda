//! Counters between two scrapes: the scrape after warm-up and the one at the end of the
//! measured phase (or two polls of the console).

use std::collections::BTreeMap;

use crate::observe::prometheus::Sample;

/// Whether a series only ever grows: counters (`_total`) and the histogram series
/// (`_bucket`, `_count`, `_sum` of non-negative durations).
pub fn is_counter(name: &str) -> bool {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The increase of a counter from `older` to `newer`; a counter that went down was reset
/// (its process restarted), so its new value is the increase.
pub fn increase(older: f64, newer: f64) -> f64 {
    if newer >= older { newer - older } else { newer }
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
                increase(start, s.value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::prometheus::{parse_prometheus, sum};

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
}
