//! Just enough PromQL and Prometheus text format to check that rules and dashboards name
//! only metrics (and label names) the services really expose.
//!
//! [`selectors`] lists the series selectors of an expression: every identifier that is not
//! a function, an aggregation, a keyword or a label list, with the label names of its
//! matchers. Strings, ranges, comments and Grafana variables (`$__rate_interval`) are
//! skipped; a call of an unknown function is an error, so a typo cannot hide as a "metric".
//! [`Exposition`] collects the series names and label names a `/metrics` page exposes,
//! from its samples and from its `# TYPE` lines (prometheus-client writes those for every
//! registered family, even one without samples yet).

use std::collections::{BTreeMap, BTreeSet};

/// PromQL functions (Prometheus 2.42).
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "end",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Aggregation operators: may be followed by `by (..)` / `without (..)` before `(`.
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and literals.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// One series selector: `name{label="v", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal starting at `i` (quote `chars[i]`).
fn skip_string(chars: &[char], i: usize) -> Result<usize, String> {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string starting at offset {i}"))
}

/// Index just past the bracket closing the one at `i`, skipping strings on the way.
fn skip_group(chars: &[char], i: usize, close: char) -> Result<usize, String> {
    let open = chars[i];
    let mut depth = 0usize;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_string(chars, j)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("`{open}` at offset {i} is never closed"))
}

fn skip_spaces(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The label names of the matchers inside `{...}` (`chars[start]` is `{`, `end` is past `}`).
fn matcher_labels(chars: &[char], start: usize, end: usize) -> Result<Vec<String>, String> {
    let mut labels = Vec::new();
    let mut i = start + 1;
    while i < end - 1 {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i)?;
        } else if is_ident_start(c) {
            let s = i;
            while i < end && is_ident(chars[i]) {
                i += 1;
            }
            let name: String = chars[s..i].iter().collect();
            let after = skip_spaces(chars, i);
            if !matches!(chars.get(after), Some('=' | '!')) {
                return Err(format!("label `{name}` without a matcher operator"));
            }
            labels.push(name);
        } else {
            i += 1;
        }
    }
    Ok(labels)
}

/// Every series selector of `expr`, in order of appearance.
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i)?,
            '[' => i = skip_group(&chars, i, ']')?,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' => {
                // A selector without a metric name (`{__name__=~"..."}`): no name to check.
                i = skip_group(&chars, i, '}')?;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '{' || chars[i] == '}')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations (`0.95`, `1e-3`, `5m`, `1h30m`).
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let s = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let ident: String = chars[s..i].iter().collect();
                let next = skip_spaces(&chars, i);
                let lower = ident.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if chars.get(next) == Some(&'(') {
                        i = skip_group(&chars, next, ')')?;
                    }
                } else if AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                {
                } else if chars.get(next) == Some(&'(') {
                    if !FUNCTIONS.contains(&ident.as_str()) {
                        return Err(format!("unknown PromQL function `{ident}`"));
                    }
                } else if chars.get(next) == Some(&'{') {
                    let end = skip_group(&chars, next, '}')?;
                    let labels = matcher_labels(&chars, next, end)?;
                    out.push(Selector {
                        name: ident,
                        labels,
                    });
                    i = end;
                } else {
                    out.push(Selector {
                        name: ident,
                        labels: Vec::new(),
                    });
                }
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// What the `/metrics` pages of the services expose: series names and, per series name,
/// the label names its samples carry (empty for a family registered without samples).
#[derive(Debug, Default)]
pub struct Exposition {
    pub series: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    /// Adds one `/metrics` page.
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    return Err(format!("bad TYPE line: {line}"));
                };
                let names: Vec<String> = match kind {
                    "counter" => vec![
                        // prometheus-client names the family without `_total` and writes
                        // samples with it.
                        if name.ends_with("_total") {
                            name.to_string()
                        } else {
                            format!("{name}_total")
                        },
                    ],
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                    "summary" => ["", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                    _ => vec![name.to_string()],
                };
                for n in names {
                    self.series.entry(n).or_default();
                }
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            }
        }
        let samples =
            frlab::observe::prometheus::parse_prometheus(text).map_err(|e| e.to_string())?;
        for s in samples {
            self.series
                .entry(s.name)
                .or_default()
                .extend(s.labels.into_keys());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        selectors(expr)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn finds_metrics_not_functions_keywords_or_label_lists() {
        let expr = r#"histogram_quantile(0.95,
            sum by (service, le) (rate(rpc_server_duration_seconds_bucket{method=~"/shop[.]v1[.].*"}[1m])))
          / on () group_left
          sum without (pod) (increase(a_total[5m:1m] offset 1h)) > bool 2e-3
          or label_replace(vector(1), "kind", "shed", "", "") unless frlab:x:rate1m"#;
        assert_eq!(
            names(expr),
            [
                "rpc_server_duration_seconds_bucket",
                "a_total",
                "frlab:x:rate1m"
            ]
        );
    }

    #[test]
    fn collects_matcher_label_names_and_ignores_strings() {
        let s = selectors(
            r#"sum(rate(x_total{service="a}b",code!~'O"K', hop = "p"}[$__rate_interval])) by (hop)"#,
        )
        .unwrap();
        assert_eq!(
            s,
            [Selector {
                name: "x_total".into(),
                labels: vec!["service".into(), "code".into(), "hop".into()],
            }]
        );
    }

    #[test]
    fn rejects_unknown_functions_and_broken_input() {
        assert!(
            selectors("rates(x_total[1m])")
                .unwrap_err()
                .contains("rates")
        );
        assert!(selectors(r#"x{a="b"#).is_err());
        assert!(selectors("x{a}").unwrap_err().contains("`a`"));
    }

    #[test]
    fn exposition_knows_families_without_samples() {
        let mut e = Exposition::default();
        e.add(
            "# HELP c Counts.\n# TYPE c counter\n# TYPE h histogram\n# TYPE g gauge\n\
             g{service=\"x\",hop=\"y\"} 1\n# EOF\n",
        )
        .unwrap();
        let keys: Vec<&str> = e.series.keys().map(String::as_str).collect();
        assert_eq!(keys, ["c_total", "g", "h_bucket", "h_count", "h_sum"]);
        assert_eq!(
            e.series["g"].iter().collect::<Vec<_>>(),
            [&"hop".to_string(), &"service".to_string()]
        );
    }
}
