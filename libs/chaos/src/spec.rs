//! The FaultInjection document: one fault, its target, its parameters and how long it lasts.
//! The same YAML is applied locally (`frlab chaos apply -f`) and on a cluster (`kubectl apply
//! -f`, reconciled by chaos-controller, whose CustomResource wraps [`FaultInjectionSpec`]).
//!
//! ```yaml
//! apiVersion: lab.frlab.dev/v1alpha1
//! kind: FaultInjection
//! metadata:
//!   name: payment-errors
//! spec:
//!   selector: { service: payments }
//!   mode: all
//!   action: error
//!   error: { code: UNAVAILABLE, probability: 0.2, mode: fail-fast }
//!   duration: 60s
//!   seed: 42
//! ```
//!
//! Why the checks live here, next to the types: a fault is written by hand, applied from
//! three places (the CLI, the controller, the admin API) and acts on a running experiment.
//! A typo must be refused before anything is applied, with a message that names the field
//! (`spec.error.probability: must be between 0 and 1, got 1.5`), never half-applied or
//! silently ignored. Shape errors (unknown field, unknown action, wrong type) are serde's,
//! with the field and the line; value errors come from [`FaultInjectionSpec::validate`].
//!
//! The admin API carries a fault as a [`Fault`] message: see [`FaultInjectionSpec::to_fault`]
//! for its wire form and [`from_fault`] for the way back.

use std::collections::BTreeMap;
use std::time::Duration;

use lab_proto::codes::CODE_NAMES;
use lab_proto::lab::v1::Fault;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "lab.frlab.dev/v1alpha1";
pub const KIND: &str = "FaultInjection";

/// The services a fault can target.
pub const SERVICES: [&str; 5] = [
    "gateway",
    "orders",
    "payments",
    "inventory",
    "notifications",
];

/// The longest delay a fault may ask for, and the cap on every latency draw: a fault is
/// there to slow a call down, not to park it forever.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Which pods (on a cluster) or which local service a fault applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// gateway, orders, payments, inventory or notifications.
    pub service: String,
    /// Extra pod labels that must match (cluster only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How many of the selected pods get the fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    All,
    One,
    FixedPercent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Answer a gRPC error with some probability.
    Error,
    /// Add latency (it holds the callee's capacity slot while it waits).
    Latency,
    /// Cut payments' slots by a factor.
    Brownout,
    /// Refuse every call.
    Outage,
    /// Inventory holds the stock row lock for a while on a share of reservations.
    LockHold,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorMode {
    /// Answer at once.
    #[default]
    FailFast,
    /// Answer after the normal service time (the work is wasted).
    FailSlow,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorParams {
    /// gRPC code name, e.g. UNAVAILABLE.
    pub code: String,
    /// Share of calls that fail, 0..=1.
    pub probability: f64,
    #[serde(default)]
    pub mode: ErrorMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    Fixed,
    Uniform,
    Lognormal,
    Pareto,
}

/// Added latency. `fixed`: `fixedMs`; `uniform`: `minMs`..`maxMs`; `lognormal`: `p50Ms` and
/// `p95Ms`; `pareto`: `scaleMs` (the minimum) and `shape` (alpha; smaller = heavier tail).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencyParams {
    pub distribution: Distribution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<f64>,
    /// Share of calls delayed, 0..=1 (default 1).
    #[serde(default = "one")]
    pub probability: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrownoutParams {
    /// Share of payments' slots that remain, in (0, 1): 0.2 cuts capacity by 80 %.
    pub capacity_factor: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockHoldParams {
    /// How long the row lock is held, in ms.
    pub hold_ms: u64,
    /// Share of reservations that hold it, 0..=1 (default 1).
    #[serde(default = "one")]
    pub probability: f64,
}

fn one() -> f64 {
    1.0
}

/// The `spec` of a FaultInjection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultInjectionSpec {
    pub selector: Selector,
    #[serde(default)]
    pub mode: Mode,
    /// With mode fixed-percent: the percentage of selected pods, 1..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u32>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brownout: Option<BrownoutParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_hold: Option<LockHoldParams>,
    /// Full gRPC method paths the fault applies to (default: every business method).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// How long the fault lasts: a number and a unit, e.g. `500ms`, `30s`, `2m`.
    pub duration: String,
    /// Seed of the fault's random draws: the same seed gives the same sequence.
    #[serde(default)]
    pub seed: u64,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Error,
        Action::Latency,
        Action::Brownout,
        Action::Outage,
        Action::LockHold,
    ];

    /// The action as YAML spells it (kebab-case): `error`, `latency`, `brownout`, `outage`,
    /// `lock-hold`. Also the `kind` of a wire [`Fault`] and the `kind` label of
    /// `chaos_injected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Error => "error",
            Action::Latency => "latency",
            Action::Brownout => "brownout",
            Action::Outage => "outage",
            Action::LockHold => "lock-hold",
        }
    }

    /// Parses [`Action::as_str`]; `lock_hold` (the proto comment's spelling) is accepted too.
    pub fn from_name(name: &str) -> Option<Action> {
        match name {
            "lock_hold" => Some(Action::LockHold),
            _ => Action::ALL.into_iter().find(|a| a.as_str() == name),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Distribution {
    fn as_str(self) -> &'static str {
        match self {
            Distribution::Fixed => "fixed",
            Distribution::Uniform => "uniform",
            Distribution::Lognormal => "lognormal",
            Distribution::Pareto => "pareto",
        }
    }
}

/// A whole FaultInjection document, as a file holds it (`frlab chaos apply -f`). On a
/// cluster the controller's CustomResource plays this part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultInjection {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    pub metadata: Metadata,
    pub spec: FaultInjectionSpec,
}

/// The part of Kubernetes object metadata a local document uses: the name is the fault's
/// name (applying a fault with the same name replaces it). Namespace, labels and
/// annotations are accepted so that one file serves `kubectl` and `frlab` alike.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl FaultInjection {
    /// A document named `name` around `spec`.
    pub fn new(name: impl Into<String>, spec: FaultInjectionSpec) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: Metadata {
                name: name.into(),
                ..Metadata::default()
            },
            spec,
        }
    }

    /// Checks the envelope (apiVersion, kind, metadata.name) and then the spec.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!("expected {API_VERSION}, got {:?}", self.api_version),
            ));
        }
        if self.kind != KIND {
            return Err(invalid(
                "kind",
                format!("expected {KIND}, got {:?}", self.kind),
            ));
        }
        validate_name("metadata.name", &self.metadata.name)?;
        self.spec.validate()
    }
}

/// Why a fault was refused. Every variant names where the problem is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// A field has a bad value; `field` is its path, e.g. `spec.error.probability`.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The YAML or JSON does not fit the schema (unknown field, unknown action, wrong
    /// type, bad syntax). The parser's message names the field and says where it is.
    #[error("{0}")]
    Syntax(String),
    /// A problem in one document of a multi-document file (`index` counts from 1).
    #[error("document {index} ({name}): {source}")]
    InDocument {
        index: usize,
        name: String,
        #[source]
        source: Box<SpecError>,
    },
}

impl SpecError {
    /// The path of the bad field, when the error is about one value.
    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Invalid { field, .. } => Some(field),
            SpecError::Syntax(_) => None,
            SpecError::InDocument { source, .. } => source.field(),
        }
    }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses every FaultInjection document of a YAML file (documents separated by `---`;
/// empty documents are skipped) and validates each. All or nothing: one bad document
/// refuses the file, so that nothing is applied from it.
pub fn parse_documents(yaml: &str) -> Result<Vec<FaultInjection>, SpecError> {
    let docs: Vec<FaultInjection> =
        serde_saphyr::from_multiple(yaml).map_err(|e| yaml_error(yaml, &e))?;
    if docs.is_empty() {
        return Err(SpecError::Syntax(
            "no FaultInjection document found".to_string(),
        ));
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, doc) in docs.iter().enumerate() {
        let index = i + 1;
        let in_doc = |source: SpecError| SpecError::InDocument {
            index,
            name: doc.metadata.name.clone(),
            source: Box::new(source),
        };
        doc.validate().map_err(in_doc)?;
        if let Some(first) = seen.insert(&doc.metadata.name, index) {
            return Err(in_doc(invalid(
                "metadata.name",
                format!(
                    "{:?} is already the name of document {first}; names must be unique",
                    doc.metadata.name
                ),
            )));
        }
    }
    Ok(docs)
}

/// serde names an unknown *field* but not the field holding an unknown *value* (`unknown
/// variant `explode`` says nothing of `action`). So when the error points at a value, the
/// key in front of it on that line is put first: `action: unknown variant ...`.
fn yaml_error(yaml: &str, err: &serde_saphyr::Error) -> SpecError {
    let message = err.without_snippet().to_string();
    let key = err.location().and_then(|loc| {
        let line = yaml
            .lines()
            .nth(usize::try_from(loc.line()).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(loc.column()).ok()?.checked_sub(1)?;
        let before: String = line.chars().take(column).collect();
        let before = before.trim_end().strip_suffix(':')?;
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let key = &before[start..];
        (!key.is_empty()).then(|| key.to_string())
    });
    match key {
        Some(key) => SpecError::Syntax(format!("{key}: {message}")),
        None => SpecError::Syntax(message),
    }
}

const DURATION_HELP: &str = "is not a duration (a number and ms, s, m or h, e.g. 30s)";

/// Parses `500ms`, `30s`, `1.5s`, `2m`, `1h`. No sign, no spaces; `None` if malformed.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let valid_number = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    if !valid_number {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let ms = value * unit_ms;
    // Ten years is no fault window; refusing it also keeps the conversion exact.
    if !ms.is_finite() || ms > 315_360_000_000.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(Duration::from_millis(ms.round() as u64))
}

/// Formats a duration in the largest unit that holds it exactly: `30s`, `2m`, `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub(crate) fn validate_name(field: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(invalid(field, "required"));
    }
    if name.len() > 253 {
        return Err(invalid(field, "must be at most 253 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            field,
            format!("{name:?} may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

fn check_probability(field: &str, p: f64) -> Result<(), SpecError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(field, format!("must be between 0 and 1, got {p}")))
    }
}

fn check_delay_ms(field: &str, ms: u64) -> Result<(), SpecError> {
    let max = MAX_DELAY.as_millis();
    if u128::from(ms) > max {
        return Err(invalid(
            field,
            format!("must be at most {max} (60 s), got {ms}"),
        ));
    }
    Ok(())
}

/// Whether `method` is a full gRPC method path, `/pkg.Service/Method`, or a whole service,
/// `/pkg.Service/*`.
pub fn is_method_pattern(method: &str) -> bool {
    let Some(rest) = method.strip_prefix('/') else {
        return false;
    };
    let Some((service, name)) = rest.split_once('/') else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    let service_ok = service.contains('.') && service.split('.').all(word);
    service_ok && (name == "*" || word(name))
}

impl LatencyParams {
    /// The parameters the distribution uses (and the others, which must be absent).
    fn check(&self) -> Result<(), SpecError> {
        let dist = self.distribution;
        let given = [
            ("fixedMs", self.fixed_ms.is_some()),
            ("minMs", self.min_ms.is_some()),
            ("maxMs", self.max_ms.is_some()),
            ("p50Ms", self.p50_ms.is_some()),
            ("p95Ms", self.p95_ms.is_some()),
            ("scaleMs", self.scale_ms.is_some()),
            ("shape", self.shape.is_some()),
        ];
        let used: &[&str] = match dist {
            Distribution::Fixed => &["fixedMs"],
            Distribution::Uniform => &["minMs", "maxMs"],
            Distribution::Lognormal => &["p50Ms", "p95Ms"],
            Distribution::Pareto => &["scaleMs", "shape"],
        };
        for (name, present) in given {
            let field = format!("spec.latency.{name}");
            if used.contains(&name) && !present {
                return Err(invalid(
                    field,
                    format!("required with distribution {}", dist.as_str()),
                ));
            }
            if !used.contains(&name) && present {
                return Err(invalid(
                    field,
                    format!("not used with distribution {}", dist.as_str()),
                ));
            }
        }
        for (name, value) in [
            ("fixedMs", self.fixed_ms),
            ("minMs", self.min_ms),
            ("maxMs", self.max_ms),
            ("p50Ms", self.p50_ms),
            ("p95Ms", self.p95_ms),
            ("scaleMs", self.scale_ms),
        ] {
            if let Some(ms) = value {
                check_delay_ms(&format!("spec.latency.{name}"), ms)?;
            }
        }
        match dist {
            Distribution::Fixed => {}
            Distribution::Uniform => {
                let (min, max) = (self.min_ms.unwrap_or(0), self.max_ms.unwrap_or(0));
                if max < min {
                    return Err(invalid(
                        "spec.latency.maxMs",
                        format!("must be at least minMs ({min}), got {max}"),
                    ));
                }
            }
            Distribution::Lognormal => {
                let (p50, p95) = (self.p50_ms.unwrap_or(0), self.p95_ms.unwrap_or(0));
                if p50 == 0 {
                    return Err(invalid("spec.latency.p50Ms", "must be greater than 0"));
                }
                if p95 < p50 {
                    return Err(invalid(
                        "spec.latency.p95Ms",
                        format!("must be at least p50Ms ({p50}), got {p95}"),
                    ));
                }
            }
            Distribution::Pareto => {
                if self.scale_ms == Some(0) {
                    return Err(invalid("spec.latency.scaleMs", "must be greater than 0"));
                }
                let shape = self.shape.unwrap_or(0.0);
                if !(shape.is_finite() && shape > 0.0) {
                    return Err(invalid(
                        "spec.latency.shape",
                        format!("must be greater than 0, got {shape}"),
                    ));
                }
            }
        }
        check_probability("spec.latency.probability", self.probability)
    }
}

impl FaultInjectionSpec {
    /// Checks every value the types cannot: ranges, the parameters the action needs (and
    /// only those), which service an action may target, method paths, the duration. The
    /// error names the field's path from `spec`.
    pub fn validate(&self) -> Result<(), SpecError> {
        let service = self.selector.service.as_str();
        if !SERVICES.contains(&service) {
            return Err(invalid(
                "spec.selector.service",
                format!(
                    "unknown service {service:?}; expected one of {}",
                    SERVICES.join(", ")
                ),
            ));
        }
        match (self.mode, self.value) {
            (Mode::FixedPercent, None) => {
                return Err(invalid(
                    "spec.value",
                    "required with mode fixed-percent (1..=100)",
                ));
            }
            (Mode::FixedPercent, Some(v)) if !(1..=100).contains(&v) => {
                return Err(invalid(
                    "spec.value",
                    format!("must be between 1 and 100, got {v}"),
                ));
            }
            (Mode::All | Mode::One, Some(_)) => {
                return Err(invalid("spec.value", "only used with mode fixed-percent"));
            }
            _ => {}
        }

        let action = self.action;
        let blocks = [
            (Action::Error, "spec.error", self.error.is_some()),
            (Action::Latency, "spec.latency", self.latency.is_some()),
            (Action::Brownout, "spec.brownout", self.brownout.is_some()),
            (Action::LockHold, "spec.lockHold", self.lock_hold.is_some()),
        ];
        for (owner, field, present) in blocks {
            if owner == action && !present {
                return Err(invalid(field, format!("required when action is {action}")));
            }
            if owner != action && present {
                return Err(invalid(field, format!("not used when action is {action}")));
            }
        }

        if let Some(error) = &self.error {
            match CODE_NAMES.iter().find(|(n, _)| *n == error.code) {
                None => {
                    return Err(invalid(
                        "spec.error.code",
                        format!(
                            "unknown gRPC code {:?}; expected one of {}",
                            error.code,
                            CODE_NAMES[1..]
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                Some((_, tonic::Code::Ok)) => {
                    return Err(invalid("spec.error.code", "must be an error code, not OK"));
                }
                Some(_) => {}
            }
            check_probability("spec.error.probability", error.probability)?;
        }
        if let Some(latency) = &self.latency {
            latency.check()?;
        }
        if let Some(brownout) = &self.brownout {
            if service != "payments" {
                return Err(invalid(
                    "spec.selector.service",
                    format!("action brownout applies only to payments, got {service:?}"),
                ));
            }
            let f = brownout.capacity_factor;
            if !(f > 0.0 && f < 1.0) {
                return Err(invalid(
                    "spec.brownout.capacityFactor",
                    format!("must be between 0 and 1 (exclusive), got {f}"),
                ));
            }
        }
        if let Some(lock) = &self.lock_hold {
            if service != "inventory" {
                return Err(invalid(
                    "spec.selector.service",
                    format!("action lock-hold applies only to inventory, got {service:?}"),
                ));
            }
            if lock.hold_ms == 0 {
                return Err(invalid("spec.lockHold.holdMs", "must be greater than 0"));
            }
            check_delay_ms("spec.lockHold.holdMs", lock.hold_ms)?;
            check_probability("spec.lockHold.probability", lock.probability)?;
        }

        if action == Action::Brownout && !self.methods.is_empty() {
            return Err(invalid(
                "spec.methods",
                "not used when action is brownout (it cuts the capacity of every call)",
            ));
        }
        for (i, method) in self.methods.iter().enumerate() {
            if !is_method_pattern(method) {
                return Err(invalid(
                    format!("spec.methods[{i}]"),
                    format!(
                        "{method:?} is not a method path like /shop.v1.Payments/Charge or /shop.v1.Payments/*"
                    ),
                ));
            }
        }

        match parse_duration(&self.duration) {
            None => {
                return Err(invalid(
                    "spec.duration",
                    format!("{:?} {DURATION_HELP}", self.duration),
                ));
            }
            Some(d) if d.is_zero() => {
                return Err(invalid(
                    "spec.duration",
                    format!("must be greater than 0, got {:?}", self.duration),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// How long the fault lasts. Zero if `duration` does not parse (which
    /// [`validate`](Self::validate) refuses).
    pub fn duration(&self) -> Duration {
        parse_duration(&self.duration).unwrap_or_default()
    }

    /// The wire form for the admin API. `kind` is the action ([`Action::as_str`]),
    /// `params_json` is the spec without `action`, `duration` and `seed` (those have fields
    /// of their own; see [`FaultParams`]), `start_at_ms` is 0 (from now): a caller that
    /// schedules the fault sets it. `seed_override` replaces the spec's seed (the
    /// controller gives each pod its own).
    pub fn to_fault(&self, name: &str, seed_override: Option<u64>) -> Fault {
        let params = FaultParams::from(self);
        Fault {
            name: name.to_string(),
            kind: self.action.as_str().to_string(),
            params_json: serde_json::to_string(&params).expect("fault params serialize"),
            seed: seed_override.unwrap_or(self.seed),
            start_at_ms: 0,
            duration_ms: i64::try_from(self.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// `params_json` of a wire [`Fault`]: a [`FaultInjectionSpec`] without `action` (the
/// fault's `kind`), `duration` (`duration_ms`) and `seed` (`seed`). camelCase, unknown
/// fields refused, absent blocks omitted, e.g.
/// `{"selector":{"service":"payments"},"mode":"all","error":{"code":"UNAVAILABLE","probability":0.2,"mode":"fail-fast"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultParams {
    pub selector: Selector,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brownout: Option<BrownoutParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_hold: Option<LockHoldParams>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

impl From<&FaultInjectionSpec> for FaultParams {
    fn from(spec: &FaultInjectionSpec) -> Self {
        Self {
            selector: spec.selector.clone(),
            mode: spec.mode,
            value: spec.value,
            error: spec.error.clone(),
            latency: spec.latency.clone(),
            brownout: spec.brownout.clone(),
            lock_hold: spec.lock_hold.clone(),
            methods: spec.methods.clone(),
        }
    }
}

/// A fault as the admin API received it, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct WireFault {
    pub name: String,
    /// The spec rebuilt from the wire form; its `duration` is `duration_ms` in the largest
    /// exact unit ([`format_duration`]) and its `seed` the fault's seed.
    pub spec: FaultInjectionSpec,
    /// When the fault starts, in ms since the Unix epoch; `None` = now.
    pub start_at_ms: Option<i64>,
}

/// The way back from [`FaultInjectionSpec::to_fault`]: checks the name, kind, params and
/// times, rebuilds the spec and validates it. Errors name the wire field (`kind`,
/// `params_json`, `duration_ms`, `start_at_ms`) or the spec field (`spec.error.probability`).
pub fn from_fault(fault: &Fault) -> Result<WireFault, SpecError> {
    validate_name("name", &fault.name)?;
    let action = Action::from_name(&fault.kind).ok_or_else(|| {
        invalid(
            "kind",
            format!(
                "unknown action {:?}; expected one of {}",
                fault.kind,
                Action::ALL.map(Action::as_str).join(", ")
            ),
        )
    })?;
    let params: FaultParams = serde_json::from_str(&fault.params_json)
        .map_err(|e| SpecError::Syntax(format!("params_json: {e}")))?;
    if fault.duration_ms <= 0 {
        return Err(invalid(
            "duration_ms",
            format!("must be greater than 0, got {}", fault.duration_ms),
        ));
    }
    if fault.start_at_ms < 0 {
        return Err(invalid(
            "start_at_ms",
            format!(
                "must be 0 (now) or ms since the Unix epoch, got {}",
                fault.start_at_ms
            ),
        ));
    }
    #[allow(clippy::cast_sign_loss)]
    let duration = Duration::from_millis(fault.duration_ms as u64);
    let spec = FaultInjectionSpec {
        selector: params.selector,
        mode: params.mode,
        value: params.value,
        action,
        error: params.error,
        latency: params.latency,
        brownout: params.brownout,
        lock_hold: params.lock_hold,
        methods: params.methods,
        duration: format_duration(duration),
        seed: fault.seed,
    };
    spec.validate()?;
    Ok(WireFault {
        name: fault.name.clone(),
        spec,
        start_at_ms: (fault.start_at_ms > 0).then_some(fault.start_at_ms),
    })
}
