//! The console API's request bodies, checked field by field: a bad value is a
//! [`BadInput`] naming the field and the value (HTTP 400), never a panic or a silent
//! default. The fault request becomes a FaultInjection spec exactly as a YAML file would.

use lab_chaos::spec::{
    Action, BrownoutParams, Distribution, ErrorMode, ErrorParams, FaultInjectionSpec,
    LatencyParams, Mode, Selector,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::traffic::{MAX_BURST, MAX_RATE};

/// The services the console's fault controls target.
pub const FAULT_TARGETS: [&str; 2] = ["payments", "inventory"];
/// The fault kinds the console offers.
pub const FAULT_KINDS: [&str; 4] = ["error", "latency", "outage", "brownout"];
/// The longest fault the console applies, in seconds.
pub const MAX_FAULT_SECONDS: u64 = 3600;

/// A request field that is missing, of the wrong type or out of range.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{field}: {message}, got {value}")]
pub struct BadInput {
    pub field: String,
    pub value: Value,
    pub message: String,
}

fn bad(field: &str, value: &Value, message: impl Into<String>) -> BadInput {
    BadInput {
        field: field.into(),
        value: value.clone(),
        message: message.into(),
    }
}

/// Parses a JSON object body; `allowed` are its only keys.
pub fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, BadInput> {
    let text = String::from_utf8_lossy(body);
    let value: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(&text).map_err(|e| {
            bad(
                "body",
                &Value::String(text.chars().take(200).collect()),
                format!("not JSON ({e})"),
            )
        })?
    };
    let Value::Object(map) = value else {
        return Err(bad("body", &value, "expected a JSON object"));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(
            key,
            &map[key],
            format!("unknown field; expected one of {}", allowed.join(", ")),
        ));
    }
    Ok(map)
}

/// A number as the request most likely spelled it: `5000`, not `5000.0`.
fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

fn number(map: &Map<String, Value>, field: &str) -> Result<Option<f64>, BadInput> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| bad(field, v, "expected a number")),
    }
}

fn required(map: &Map<String, Value>, field: &str) -> Result<f64, BadInput> {
    number(map, field)?.ok_or_else(|| bad(field, &Value::Null, "required"))
}

fn in_range(field: &str, v: f64, lo: f64, hi: f64, what: &str) -> Result<f64, BadInput> {
    if v < lo || v > hi {
        return Err(bad(field, &num(v), format!("must be {what}")));
    }
    Ok(v)
}

fn whole(field: &str, v: f64, lo: u64, hi: u64) -> Result<u64, BadInput> {
    if v.fract() != 0.0 || v < lo as f64 || v > hi as f64 {
        return Err(bad(
            field,
            &num(v),
            format!("must be a whole number from {lo} to {hi}"),
        ));
    }
    Ok(v as u64)
}

fn rate(map: &Map<String, Value>) -> Result<f64, BadInput> {
    let r = required(map, "rate")?;
    if r <= 0.0 || r > MAX_RATE {
        return Err(bad(
            "rate",
            &map["rate"],
            format!("must be more than 0 and at most {MAX_RATE} orders per second"),
        ));
    }
    Ok(r)
}

/// `POST /api/burst {count, rate}`.
pub fn burst(body: &[u8]) -> Result<(u64, f64), BadInput> {
    let map = object(body, &["count", "rate"])?;
    let count = whole("count", required(&map, "count")?, 1, MAX_BURST)?;
    Ok((count, rate(&map)?))
}

/// `POST /api/load/start {rate}`.
pub fn load(body: &[u8]) -> Result<f64, BadInput> {
    rate(&object(body, &["rate"])?)
}

fn string<'a>(map: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, BadInput> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(field, v, "expected a string")),
    }
}

fn one_of<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    choices: &[&str],
) -> Result<&'a str, BadInput> {
    let s = string(map, field)?.ok_or_else(|| bad(field, &Value::Null, "required"))?;
    if !choices.contains(&s) {
        return Err(bad(
            field,
            &map[field],
            format!("expected one of {}", choices.join(", ")),
        ));
    }
    Ok(s)
}

/// A checked `POST /api/faults` body.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRequest {
    pub service: String,
    pub spec: FaultInjectionSpec,
    /// The fault's name on the admin API: one console fault per service and kind, so
    /// injecting the same kind again replaces it.
    pub name: String,
}

/// `POST /api/faults {service, kind, duration_s, probability?, code?, latency_ms?,
/// capacity_factor?}`. Defaults: error 20 % UNAVAILABLE; latency 500 ms on every call;
/// brownout 20 % of payments' slots left.
pub fn fault(body: &[u8]) -> Result<FaultRequest, BadInput> {
    let map = object(
        body,
        &[
            "service",
            "kind",
            "duration_s",
            "probability",
            "code",
            "latency_ms",
            "capacity_factor",
        ],
    )?;
    let service = one_of(&map, "service", &FAULT_TARGETS)?.to_string();
    let kind = one_of(&map, "kind", &FAULT_KINDS)?;
    let duration = whole(
        "duration_s",
        required(&map, "duration_s")?,
        1,
        MAX_FAULT_SECONDS,
    )?;
    let probability = number(&map, "probability")?
        .map(|p| in_range("probability", p, 0.0, 1.0, "between 0 and 1"))
        .transpose()?;
    // Parameters that do not belong to the kind are refused rather than ignored.
    let only = |field: &str, kinds: &[&str]| match map.get(field) {
        Some(v) if !v.is_null() && !kinds.contains(&kind) => Err(bad(
            field,
            v,
            format!(
                "does not apply to kind {kind} (only to {})",
                kinds.join(", ")
            ),
        )),
        _ => Ok(()),
    };
    only("probability", &["error", "latency"])?;
    only("code", &["error"])?;
    only("latency_ms", &["latency"])?;
    only("capacity_factor", &["brownout"])?;
    let mut spec = FaultInjectionSpec {
        selector: Selector {
            service: service.clone(),
            labels: Default::default(),
        },
        mode: Mode::All,
        value: None,
        action: Action::from_name(kind).expect("kind checked against FAULT_KINDS"),
        error: None,
        latency: None,
        brownout: None,
        lock_hold: None,
        methods: Vec::new(),
        duration: format!("{duration}s"),
        seed: rand::random(),
    };
    match spec.action {
        Action::Error => {
            let code = string(&map, "code")?.unwrap_or("UNAVAILABLE");
            if !lab_proto::codes::CODE_NAMES
                .iter()
                .any(|(n, _)| *n == code && *n != "OK")
            {
                return Err(bad(
                    "code",
                    &Value::from(code),
                    "expected a gRPC code name other than OK, e.g. UNAVAILABLE",
                ));
            }
            spec.error = Some(ErrorParams {
                code: code.into(),
                probability: probability.unwrap_or(0.2),
                mode: ErrorMode::FailFast,
            });
        }
        Action::Latency => {
            let ms = match number(&map, "latency_ms")? {
                Some(v) => whole(
                    "latency_ms",
                    v,
                    1,
                    lab_chaos::spec::MAX_DELAY.as_millis() as u64,
                )?,
                None => 500,
            };
            spec.latency = Some(LatencyParams {
                distribution: Distribution::Fixed,
                fixed_ms: Some(ms),
                min_ms: None,
                max_ms: None,
                p50_ms: None,
                p95_ms: None,
                scale_ms: None,
                shape: None,
                probability: probability.unwrap_or(1.0),
            });
        }
        Action::Brownout => {
            if service != "payments" {
                return Err(bad(
                    "kind",
                    &Value::from(kind),
                    format!("brownout cuts payments' capacity; it does not apply to {service}"),
                ));
            }
            let factor = match number(&map, "capacity_factor")? {
                Some(f) if f > 0.0 && f < 1.0 => f,
                Some(f) => {
                    return Err(bad(
                        "capacity_factor",
                        &num(f),
                        "must be between 0 and 1 (exclusive): the share of slots left",
                    ));
                }
                None => 0.2,
            };
            spec.brownout = Some(BrownoutParams {
                capacity_factor: factor,
            });
        }
        Action::Outage | Action::LockHold => {}
    }
    // The spec's own checks, as for a YAML file: they name the spec field.
    spec.validate()
        .map_err(|e| bad("spec", &Value::from(kind), e.to_string()))?;
    Ok(FaultRequest {
        name: format!("console-{service}-{kind}"),
        service,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<impl std::fmt::Debug, BadInput>) -> BadInput {
        r.unwrap_err()
    }

    #[test]
    fn bursts_and_rates_are_bounded() {
        assert_eq!(burst(br#"{"count": 20, "rate": 10}"#).unwrap(), (20, 10.0));
        assert_eq!(load(br#"{"rate": 2.5}"#).unwrap(), 2.5);
        let e = err(burst(br#"{"count": 5000, "rate": 10}"#));
        assert_eq!(
            (e.field.as_str(), e.value.clone()),
            ("count", Value::from(5000))
        );
        assert!(e.to_string().contains("1000"), "{e}");
        let e = err(burst(br#"{"count": 2.5, "rate": 10}"#));
        assert_eq!(e.field, "count");
        let e = err(burst(br#"{"count": 10, "rate": 501}"#));
        assert_eq!(e.field, "rate");
        assert!(e.to_string().contains("500"), "{e}");
        assert_eq!(err(load(br#"{"rate": 0}"#)).field, "rate");
        assert_eq!(err(load(br#"{"rate": "fast"}"#)).value, Value::from("fast"));
        assert_eq!(err(load(b"{}")).field, "rate");
        assert_eq!(err(load(br#"{"rate": 1, "speed": 2}"#)).field, "speed");
        assert_eq!(err(load(b"[1]")).field, "body");
        assert_eq!(err(load(b"{nope")).field, "body");
    }

    #[test]
    fn faults_become_specs() {
        let f = fault(br#"{"service":"payments","kind":"outage","duration_s":30}"#).unwrap();
        assert_eq!(f.spec.action, Action::Outage);
        assert_eq!(f.spec.duration, "30s");
        assert_eq!(f.name, "console-payments-outage");
        let f =
            fault(br#"{"service":"inventory","kind":"error","duration_s":5,"probability":0.5}"#)
                .unwrap();
        let e = f.spec.error.unwrap();
        assert_eq!((e.code.as_str(), e.probability), ("UNAVAILABLE", 0.5));
        let f =
            fault(br#"{"service":"payments","kind":"latency","duration_s":5,"latency_ms":250}"#)
                .unwrap();
        assert_eq!(f.spec.latency.unwrap().fixed_ms, Some(250));
        let f = fault(br#"{"service":"payments","kind":"brownout","duration_s":5}"#).unwrap();
        assert_eq!(f.spec.brownout.unwrap().capacity_factor, 0.2);
    }

    #[test]
    fn bad_faults_name_the_field_and_value() {
        let cases: [(&[u8], &str, Value); 9] = [
            (
                br#"{"service":"orders","kind":"outage","duration_s":3}"#,
                "service",
                "orders".into(),
            ),
            (
                br#"{"service":"payments","kind":"meteor","duration_s":3}"#,
                "kind",
                "meteor".into(),
            ),
            (
                br#"{"service":"payments","kind":"outage"}"#,
                "duration_s",
                Value::Null,
            ),
            (
                br#"{"service":"payments","kind":"outage","duration_s":0}"#,
                "duration_s",
                0.into(),
            ),
            (
                br#"{"service":"payments","kind":"error","duration_s":3,"probability":1.5}"#,
                "probability",
                1.5.into(),
            ),
            (
                br#"{"service":"payments","kind":"error","duration_s":3,"code":"OOPS"}"#,
                "code",
                "OOPS".into(),
            ),
            (
                br#"{"service":"payments","kind":"outage","duration_s":3,"latency_ms":5}"#,
                "latency_ms",
                5.into(),
            ),
            (
                br#"{"service":"inventory","kind":"brownout","duration_s":3}"#,
                "kind",
                "brownout".into(),
            ),
            (
                br#"{"service":"payments","kind":"brownout","duration_s":3,"capacity_factor":1}"#,
                "capacity_factor",
                1.into(),
            ),
        ];
        for (body, field, value) in cases {
            let e = err(fault(body));
            assert_eq!((e.field.as_str(), &e.value), (field, &value), "{e}");
        }
    }
}
