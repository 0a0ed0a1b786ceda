//! The values of the `helm/frlab` chart as a Rust type.
//!
//! [`Values`] names every key of `helm/frlab/values.yaml`; every struct denies unknown keys,
//! so a misspelled key in a values file is an error instead of a silently ignored setting.
//! Its `resilience` key is the services' own profile type
//! ([`lab_resilience::config::Profile`]), so the chart, the profile files in
//! `helm/profiles/` and the services share one schema.
//!
//! - [`schema_json`] is what `helm/frlab/values.schema.json` holds (`valuesgen` prints it,
//!   `make chart-schema` writes it; a test fails when the committed file drifts). Helm
//!   enforces that schema at `install`, `upgrade`, `lint` and `template`.
//! - [`coalesce`] merges an overlay (a profile file, `-f extra.yaml`) onto the defaults the
//!   way Helm does, and [`Values::parse`] reads and checks merged values.
//!
//! The chart's offline checks (helm lint and template for every profile, yamllint,
//! kubernetes-validate, the FaultInjection manifests against the CRD's schema, assertions
//! on rendered objects) are this crate's integration tests, under `tests/`.

use std::collections::BTreeMap;

use lab_resilience::config::Profile;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything in `values.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "frlab chart values")]
pub struct Values {
    /// The one image holding every binary (gateway, orders, payments, inventory,
    /// notifications, chaos-controller, frlab); see the Dockerfile.
    pub image: Image,
    /// The profile's name: shown in /state, and the name of the profile file the services
    /// read. Empty: `custom` when `resilience` is given, else `f-full`. With an empty
    /// `resilience` the built-in profile of that name is run. `make deploy PROFILE=...`
    /// sets it.
    #[schemars(
        length(max = 63),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")
    )]
    pub profile_name: String,
    /// The resilience profile every service runs, as in `helm/profiles/*.yaml`. Empty:
    /// the built-in profile named `profileName`.
    #[serde(default)]
    pub resilience: Option<Profile>,
    /// Container ports of the five services.
    pub ports: Ports,
    /// Pods on the node's own network (a single-node cluster without a pod network: the
    /// local cluster of `make cluster-local`).
    pub host_network: HostNetwork,
    /// The bearer token of the services' admin ports (lab.v1.Faults).
    pub admin_token: AdminToken,
    /// The five services.
    pub services: Services,
    /// Postgres: the services' database (one schema per service). Off: SQLite files in
    /// each pod's emptyDir (lost on restart).
    pub postgres: Postgres,
    /// Redis: idempotency keys. Off: kept in each pod's memory.
    pub redis: Redis,
    /// Prometheus scraping every lab pod's /metrics, with the lab's recording and alert
    /// rules.
    pub prometheus: Prometheus,
    /// Grafana with the Prometheus datasource and the lab dashboard provisioned.
    pub grafana: Grafana,
    /// Jaeger all-in-one receiving OTLP (gRPC, 4317).
    pub jaeger: Jaeger,
    /// The controller reconciling FaultInjection resources into the admin ports.
    pub chaos_controller: ChaosController,
    /// `frlab console`: a web UI over every service's /state, /metrics and admin port.
    pub console: Console,
    /// The `frlab load` Job that `make loadtest` runs (not installed by the release).
    pub loadtest: Loadtest,
    /// Only chaos-controller (and the console) may reach the admin ports.
    pub network_policy: Toggle,
}

/// A container image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    #[schemars(length(min = 1))]
    pub repository: String,
    #[schemars(length(min = 1))]
    pub tag: String,
    pub pull_policy: PullPolicy,
}

/// When the kubelet pulls an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The services' container ports (the Services use the same numbers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ports {
    /// gRPC (port name `grpc`): the business API, health, reflection.
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: u16,
    /// HTTP side port (name `http`): /metrics, /state, /healthz.
    #[schemars(range(min = 1, max = 65535))]
    pub http: u16,
    /// Admin port (name `admin`): lab.v1.Faults, token-protected.
    #[schemars(range(min = 1, max = 65535))]
    pub admin: u16,
}

/// Pods on the node's network: each service on its own ports of 127.0.0.1, calls between
/// them to 127.0.0.1, Recreate rollouts. The chart refuses it with more than one replica of
/// a service, with two equal ports, or with a bundled third-party server on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostNetwork {
    pub enabled: bool,
    /// Where chaos-controller reaches the API server (without kube-proxy the `kubernetes`
    /// Service routes nowhere). Empty host: that Service.
    pub api_server: ApiServer,
    /// Each service's ports on the node.
    pub ports: HostPorts,
}

/// The API server's address for pods on the node's network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiServer {
    /// An IP address or host name; empty: the `kubernetes` Service.
    pub host: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// The ports of each service on the node's network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostPorts {
    pub gateway: Ports,
    pub orders: Ports,
    pub payments: Ports,
    pub inventory: Ports,
    pub notifications: Ports,
}

/// Where the admin token comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminToken {
    /// An existing Secret holding the token under the key `token`. Empty: the chart
    /// creates the Secret.
    pub existing_secret: String,
    /// The token of the Secret the chart creates. Empty: a random token, kept across
    /// upgrades.
    pub value: String,
}

/// The five services, by name. A name that is not one of them is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Services {
    pub gateway: Service,
    pub orders: Service,
    pub payments: Service,
    pub inventory: Service,
    pub notifications: Service,
}

impl Services {
    /// (name, settings) of each service, in call order.
    pub fn iter(&self) -> [(&'static str, &Service); 5] {
        [
            ("gateway", &self.gateway),
            ("orders", &self.orders),
            ("payments", &self.payments),
            ("inventory", &self.inventory),
            ("notifications", &self.notifications),
        ]
    }
}

/// One service's Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// Pods; more than one also gets a PodDisruptionBudget.
    #[schemars(range(min = 1, max = 20))]
    pub replicas: u32,
    /// Uses the database (FRLAB_DATABASE_URL when postgres is enabled).
    pub database: bool,
    /// Uses the idempotency store (FRLAB_REDIS_URL when redis is enabled).
    pub idempotency: bool,
    /// Downstream URL flags: environment variable -> the service it points at
    /// (`GATEWAY_ORDERS_URL: orders` becomes `http://<release>-orders:<grpc port>`).
    pub calls: BTreeMap<String, ServiceName>,
    /// Extra environment variables (the service's own flags, e.g. PAYMENTS_SLOTS).
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
}

/// A service a call can go to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Gateway,
    Orders,
    Payments,
    Inventory,
    Notifications,
}

/// Container resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub requests: ResourceList,
    pub limits: ResourceList,
}

/// CPU and memory as Kubernetes quantities (strings: `100m`, `128Mi`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi)?$"))]
    pub memory: Option<String>,
}

/// A component that is only on or off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

/// Postgres as a one-pod StatefulSet with a PersistentVolumeClaim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Postgres {
    pub enabled: bool,
    pub image: Image,
    #[schemars(length(min = 1))]
    pub database: String,
    #[schemars(length(min = 1))]
    pub user: String,
    /// A lab password, stored in the chart's Secret.
    #[schemars(length(min = 1))]
    pub password: String,
    /// Size of the data volume.
    #[schemars(regex(pattern = r"^[0-9]+(Mi|Gi)$"))]
    pub storage: String,
    /// StorageClass of the data volume; empty: the cluster's default.
    pub storage_class: String,
    pub resources: Resources,
}

/// Redis without persistence (idempotency keys have a TTL anyway).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub enabled: bool,
    pub image: Image,
    pub resources: Resources,
}

/// Prometheus, its config and rules from the chart's `files/prometheus/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    pub enabled: bool,
    pub image: Image,
    /// How long samples are kept (`--storage.tsdb.retention.time`).
    #[schemars(regex(pattern = r"^[0-9]+(m|h|d)$"))]
    pub retention: String,
    pub resources: Resources,
}

/// Grafana, anonymous read-only access plus an admin account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Grafana {
    pub enabled: bool,
    pub image: Image,
    /// The `admin` user's password, stored in the chart's Secret.
    #[schemars(length(min = 1))]
    pub admin_password: String,
    pub resources: Resources,
}

/// Jaeger all-in-one (in-memory storage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jaeger {
    pub enabled: bool,
    pub image: Image,
    pub resources: Resources,
}

/// chaos-controller (runs the chart's image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosController {
    pub enabled: bool,
    pub resources: Resources,
}

/// `frlab console` (runs the chart's image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Console {
    pub enabled: bool,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    pub resources: Resources,
}

/// `frlab load` against the gateway, as a Job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Loadtest {
    /// Rendered only when true: `make loadtest` renders the Job with it set.
    pub enabled: bool,
    /// Arrival rate, requests per second (open loop).
    #[schemars(range(min = 0.1, max = 5000.0))]
    pub rate: f64,
    /// How long the schedule runs (`500ms`, `60s`, `2m`).
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub duration: String,
    /// Client deadline per logical request.
    #[schemars(range(min = 1))]
    pub deadline_ms: u64,
    /// Extra immediate attempts per failed request (the retry_storm scenario uses 3).
    #[schemars(range(max = 10))]
    pub client_retries: u32,
    pub seed: u64,
    pub resources: Resources,
}

/// Values that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("values are not valid YAML for the chart: {0}")]
    Parse(String),
    #[error("values: {0}")]
    Profile(#[from] lab_resilience::config::ConfigError),
}

impl Values {
    /// Parses values (defaults already merged with any overlay, see [`coalesce`]) and
    /// checks the profile the way the services will.
    pub fn parse(text: &str) -> Result<Values, ValuesError> {
        let values: Values =
            serde_saphyr::from_str(text).map_err(|e| ValuesError::Parse(e.to_string()))?;
        if let Some(profile) = &values.resilience {
            profile.validate()?;
        }
        Ok(values)
    }

    /// Parses already-merged values given as JSON (see [`coalesce`]).
    pub fn from_json(value: serde_json::Value) -> Result<Values, ValuesError> {
        let values: Values =
            serde_json::from_value(value).map_err(|e| ValuesError::Parse(e.to_string()))?;
        if let Some(profile) = &values.resilience {
            profile.validate()?;
        }
        Ok(values)
    }
}

/// Merges `overlay` onto `base` as Helm merges `-f` files onto the chart's defaults: maps
/// merge key by key, anything else (lists included) is replaced, and a `null` in the
/// overlay removes the key.
pub fn coalesce(base: &mut serde_json::Value, overlay: serde_json::Value) {
    use serde_json::Value;
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                } else if let Some(slot) = b.get_mut(&k) {
                    coalesce(slot, v);
                } else {
                    b.insert(k, v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The JSON schema of [`Values`], as committed in `helm/frlab/values.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Values);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_maps_and_replaces_the_rest() {
        let mut base = serde_json::json!({"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3});
        coalesce(
            &mut base,
            serde_json::json!({"a": {"y": [3], "z": 4}, "b": {"k": 1}, "c": null}),
        );
        assert_eq!(
            base,
            serde_json::json!({"a": {"x": 1, "y": [3], "z": 4}, "b": {"k": 1}})
        );
    }

    #[test]
    fn the_schema_denies_unknown_keys_everywhere() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        assert_eq!(schema["additionalProperties"], serde_json::json!(false));
        let defs = schema["$defs"].as_object().expect("$defs");
        for name in [
            "Service",
            "Services",
            "Profile",
            "RetryConfig",
            "BreakerConfig",
        ] {
            assert_eq!(
                defs[name]["additionalProperties"],
                serde_json::json!(false),
                "{name}"
            );
        }
    }
}
