//! Traces: OTLP export of `tracing` spans and W3C trace context across every gRPC hop.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g. `http://jaeger:4317`). Then
//! [`init`] installs, next to the stderr log, a `tracing-opentelemetry` layer whose tracer
//! sends spans in batches to that endpoint over OTLP/gRPC (tonic), and marks tracing
//! [`active`]. `service.name` is the service's own name unless `OTEL_SERVICE_NAME` or
//! `service.name` in `OTEL_RESOURCE_ATTRIBUTES` says otherwise; the other
//! `OTEL_RESOURCE_ATTRIBUTES` and the `OTEL_BSP_*` batch settings are honoured as the SDK
//! reads them. [`Telemetry::shutdown`] flushes what is queued, bounded by
//! [`SHUTDOWN_TIMEOUT`], so a missing collector delays shutdown by at most that.
//!
//! Without the variable nothing is installed: no exporter, no OpenTelemetry layer, and the
//! gRPC layers in [`grpc`] create no spans (one relaxed atomic load per call).
//!
//! - [`grpc`]: the server layer (one span per incoming RPC, parent taken from the incoming
//!   `traceparent`) and the client service (one span per attempt, its context injected into
//!   the outgoing headers).
//! - [`current_traceparent`] / [`span_from_traceparent`]: carry a trace through storage
//!   (the orders outbox keeps the order's `traceparent` with the event it writes).

pub mod grpc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The variable that turns trace export on: the collector's OTLP/gRPC endpoint.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Longest a shutdown waits for the last batch to reach the collector.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one export call may take (the OTLP default is 10 s).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// True once [`init`] installed an exporter in this process: the gRPC layers trace.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{ENDPOINT_VAR}={value:?} is not a usable OTLP/gRPC endpoint: {reason} (expected http://HOST:PORT, e.g. http://jaeger:4317)"
    )]
    BadEndpoint { value: String, reason: String },
    #[error("cannot build the OTLP exporter for {ENDPOINT_VAR}={value:?}: {reason}")]
    Exporter { value: String, reason: String },
}

/// What the environment asks for; [`TraceConfig::from_env`] gives `None` when tracing is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// The collector's OTLP/gRPC endpoint, validated.
    pub endpoint: String,
    /// The `service.name` to set, or `None` when `OTEL_SERVICE_NAME` /
    /// `OTEL_RESOURCE_ATTRIBUTES` names the service (the SDK reads those itself).
    pub service_name: Option<String>,
}

impl TraceConfig {
    /// Reads the process environment.
    pub fn from_env(service: &str) -> Result<Option<Self>, TelemetryError> {
        Self::from_lookup(service, |key| std::env::var(key).ok())
    }

    /// Reads the variables through `lookup` (tests pass a map). An unset or empty
    /// endpoint, or `OTEL_SDK_DISABLED=true`, means off.
    pub fn from_lookup(
        service: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        if lookup("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(value) = lookup(ENDPOINT_VAR).filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let endpoint = validate_endpoint(&value)?;
        let named_by_env = lookup("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
            || lookup("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
                attrs.split(',').any(|kv| {
                    kv.split_once('=')
                        .is_some_and(|(k, _)| k.trim() == "service.name")
                })
            });
        Ok(Some(Self {
            endpoint,
            service_name: (!named_by_env).then(|| service.to_string()),
        }))
    }
}

fn validate_endpoint(value: &str) -> Result<String, TelemetryError> {
    let bad = |reason: &str| TelemetryError::BadEndpoint {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = value.trim();
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        // The exporter is built without a TLS stack (no extra crypto dependencies).
        Some("https") => return Err(bad("https is not supported by this build; use http://")),
        Some(other) => return Err(bad(&format!("unsupported scheme `{other}`"))),
        None => return Err(bad("missing the http:// scheme")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(bad("missing the host")),
    }
    Ok(trimmed.to_string())
}

/// Builds the tracer provider: OTLP/gRPC exporter, batch processor, resource. Must run
/// inside a Tokio runtime (the exporter's channel spawns its connection task there); the
/// channel connects lazily, so a collector that is down only costs failed exports.
pub fn build_provider(config: &TraceConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            value: config.endpoint.clone(),
            reason: e.to_string(),
        })?;
    let mut resource = Resource::builder();
    if let Some(name) = &config.service_name {
        resource = resource.with_service_name(name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The installed exporter; call [`Telemetry::shutdown`] before the runtime stops.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is still queued and stops the exporter, giving up after
    /// [`SHUTDOWN_TIMEOUT`] (a collector that is down must not hold the process).
    pub async fn shutdown(self) {
        ACTIVE.store(false, Ordering::Relaxed);
        let provider = self.provider;
        let flush =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
        match tokio::time::timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(1), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("traces: last export failed at shutdown: {e}"),
            Ok(Err(e)) => eprintln!("traces: shutdown task failed: {e}"),
            Err(_) => eprintln!(
                "traces: gave up flushing after {} s",
                SHUTDOWN_TIMEOUT.as_secs() + 1
            ),
        }
    }
}

/// Installs the process's `tracing` subscriber: the stderr log filtered by `RUST_LOG`
/// (default `info`) and, when [`TraceConfig::from_env`] finds an endpoint, span export.
/// Must run inside a Tokio runtime. Returns `None` when tracing is off.
pub fn init(service: &str) -> Result<Option<Telemetry>, TelemetryError> {
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(log_filter);
    let Some(config) = TraceConfig::from_env(service)? else {
        let _ = tracing_subscriber::registry().with(log).try_init();
        return Ok(None);
    };
    let provider = build_provider(&config)?;
    let tracer = provider.tracer(service.to_string());
    // The RUST_LOG filter is the log's own: the spans are exported whatever the log level.
    // The exporter's own crates are left out (their events would feed back into export).
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("opentelemetry", LevelFilter::OFF)
                .with_target("opentelemetry_sdk", LevelFilter::OFF)
                .with_target("opentelemetry_otlp", LevelFilter::OFF)
                .with_target("h2", LevelFilter::OFF)
                .with_target("hyper", LevelFilter::OFF)
                .with_target("tonic", LevelFilter::OFF)
                .with_target("tower", LevelFilter::OFF),
        );
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init();
    opentelemetry::global::set_tracer_provider(provider.clone());
    ACTIVE.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %config.endpoint, "exporting traces over OTLP/gRPC");
    Ok(Some(Telemetry { provider }))
}

/// The `traceparent` of the current span, when tracing is [`active`] and a span is current.
pub fn current_traceparent() -> Option<String> {
    if !active() {
        return None;
    }
    traceparent_of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span`, if it belongs to a sampled-or-not valid trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a stored `traceparent` names; for `None` or an
/// unparsable value the span starts a trace of its own. Call it before anything else
/// reads the span's context.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    let carrier: HashMap<String, String> = traceparent
        .map(|tp| ("traceparent".to_string(), tp.to_string()))
        .into_iter()
        .collect();
    // Onto an empty context: an invalid value must not fall back to the current span.
    let cx = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &carrier);
    let _ = span.set_parent(cx);
}

/// Reads W3C trace context from gRPC metadata (HTTP/2 headers).
pub(crate) struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into outgoing gRPC metadata.
pub(crate) struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn without_the_endpoint_nothing_is_configured() {
        assert_eq!(TraceConfig::from_lookup("orders", env(&[])).unwrap(), None);
        assert_eq!(
            TraceConfig::from_lookup("orders", env(&[(ENDPOINT_VAR, "  ")])).unwrap(),
            None,
            "empty counts as unset"
        );
        assert_eq!(
            TraceConfig::from_lookup(
                "orders",
                env(&[
                    (ENDPOINT_VAR, "http://c:4317"),
                    ("OTEL_SDK_DISABLED", "true")
                ])
            )
            .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn init_without_the_variable_installs_nothing() {
        // This test binary never sets the variable (nextest runs each test in its own
        // process, so no other test can have installed an exporter here).
        if std::env::var_os(ENDPOINT_VAR).is_some() {
            panic!("{ENDPOINT_VAR} is set in the test environment; unset it to run this test");
        }
        assert!(init("orders").unwrap().is_none());
        assert!(!active());
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn the_service_name_defaults_to_the_service_unless_the_environment_names_it() {
        let on = [(ENDPOINT_VAR, "http://127.0.0.1:4317")];
        let cfg = TraceConfig::from_lookup("payments", env(&on))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.endpoint, "http://127.0.0.1:4317");
        assert_eq!(cfg.service_name.as_deref(), Some("payments"));
        let named = [on[0], ("OTEL_SERVICE_NAME", "pay-eu")];
        let cfg = TraceConfig::from_lookup("payments", env(&named))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.service_name, None, "the SDK reads OTEL_SERVICE_NAME");
        let attrs = [
            on[0],
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=lab, service.name=x",
            ),
        ];
        let cfg = TraceConfig::from_lookup("payments", env(&attrs))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.service_name, None);
        let other_attrs = [on[0], ("OTEL_RESOURCE_ATTRIBUTES", "team=sre")];
        let cfg = TraceConfig::from_lookup("payments", env(&other_attrs))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.service_name.as_deref(), Some("payments"));
    }

    #[test]
    fn bad_endpoints_name_the_variable_and_the_value() {
        for value in [
            "jaeger:4317",
            "127.0.0.1:4317",
            "ftp://jaeger:4317",
            "http://",
            "http://[::1",
            "https://jaeger:4317",
        ] {
            let err = TraceConfig::from_lookup("gateway", env(&[(ENDPOINT_VAR, value)]))
                .expect_err(value)
                .to_string();
            assert!(err.contains(ENDPOINT_VAR), "{err}");
            assert!(err.contains(&format!("{value:?}")), "{err}");
        }
    }

    #[test]
    fn traceparent_round_trips_through_storage() {
        let (provider, _spans) = grpc::tests::recording_provider();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let order = tracing::info_span!("order");
            let tp = traceparent_of(&order).expect("a valid span has a traceparent");
            assert!(tp.starts_with("00-"), "{tp}");
            let relay = tracing::info_span!(parent: None, "relay");
            set_parent_from_traceparent(&relay, Some(&tp));
            let parent = order.context().span().span_context().clone();
            let child = relay.context().span().span_context().clone();
            assert_eq!(child.trace_id(), parent.trace_id());
            let _inside = order.clone().entered();
            let garbage = tracing::info_span!(parent: None, "garbage");
            set_parent_from_traceparent(&garbage, Some("not-a-traceparent"));
            assert_ne!(
                garbage.context().span().span_context().trace_id(),
                parent.trace_id()
            );
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_with_no_collector_is_bounded() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = TraceConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            service_name: Some("orders".into()),
        };
        let provider = build_provider(&config).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("lost").entered();
        });
        let started = std::time::Instant::now();
        Telemetry { provider }.shutdown().await;
        let took = started.elapsed();
        assert!(
            took < SHUTDOWN_TIMEOUT + Duration::from_secs(5),
            "shutdown took {took:?}"
        );
    }
}
