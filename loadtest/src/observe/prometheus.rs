//! The Prometheus / OpenMetrics text format, read: one [`Sample`] per series line, and the
//! sum of the series that carry some labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use lab_runtime::metrics::SERVER_REQUESTS_TOTAL as SERVER_REQUESTS;

    const CHARGE: &str = "/shop.v1.Payments/Charge";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
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
}
