//! One order is one trace across the real service binaries and the outbox relay.
//!
//! An in-test OTLP collector (opentelemetry-proto's `TraceService` on 127.0.0.1:0) receives
//! the spans of the five services, started as processes with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at it. The batch delay is set far beyond the test's length, so every span
//! arrives through the flush the services do when they stop: that path is checked too.
//! Binaries are found as in `tests/stack.rs` (`cargo nextest run --workspace` builds them).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use frlab::observe::grpc as client;
use frlab::stack::{LocalStack, StackOptions};
use lab_proto::lab::v1::SnapshotRequest;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, OrderStatus, PlaceOrderRequest};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio_stream::wrappers::TcpListenerStream;

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    /// `service.name` of the resource that sent it.
    service: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root.
    parent: String,
    name: String,
    kind: SpanKind,
    attributes: HashMap<String, String>,
}

impl std::fmt::Display for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} [{:?}] {} <- {}",
            self.service, self.name, self.kind, self.span_id, self.parent
        )
    }
}

fn value(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(value)
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    kind: span.kind(),
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value(kv)))
                        .collect(),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the collector on 127.0.0.1:0; returns its URL.
async fn start_collector(collector: Collector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn options(dir: &Path, collector_url: &str) -> StackOptions {
    let mut opts = StackOptions::new(dir.join("data"));
    opts.ephemeral_ports = true;
    opts.log_dir = Some(dir.join("logs"));
    opts.ready_timeout = Duration::from_secs(60);
    // The full profile: the outbox relay delivers the order's event.
    opts.profile = Some("f-full".into());
    opts.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector_url.into()),
        // Nothing is exported on a timer during the test: only the flush at shutdown.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()),
        ("OTEL_SERVICE_NAME".into(), String::new()),
        (
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            "deployment.environment=test".into(),
        ),
    ];
    opts
}

async fn deliveries(url: &str) -> i64 {
    AuditClient::new(client::channel(url).unwrap())
        .snapshot(SnapshotRequest { include_ids: false })
        .await
        .map(|r| r.into_inner().counters["deliveries_total"])
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_every_hop_and_the_outbox() {
    let collector = Collector::default();
    let collector_url = start_collector(collector.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(options(dir.path(), &collector_url))
        .await
        .expect("the stack starts with traces on");

    let mut gateway = GatewayClient::new(client::channel(&stack.gateway_url()).unwrap());
    let order = gateway
        .place_order(PlaceOrderRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            customer_id: "customer-1".into(),
            items: vec![LineItem {
                product_id: "sku-1".into(),
                quantity: 1,
            }],
        })
        .await
        .expect("PlaceOrder succeeds")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed as i32);

    // The relay delivers asynchronously: wait (bounded) until Notifications has the event.
    let notifications = stack.endpoint("notifications").unwrap().grpc_url();
    let mut delivered = false;
    for _ in 0..300 {
        if deliveries(&notifications).await >= 1 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "the outbox relay did not deliver within 30 s");
    assert!(
        collector.spans.lock().unwrap().is_empty(),
        "spans arrived before shutdown although the batch delay is 10 min"
    );
    // Every service flushes its spans as it stops.
    stack.stop().await.expect("every service stops cleanly");

    let spans = collector.spans.lock().unwrap().clone();
    let dump = || spans.iter().map(|s| format!("  {s}\n")).collect::<String>();
    let root = spans
        .iter()
        .find(|s| s.name == "shop.v1.Gateway/PlaceOrder" && s.kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("no gateway PlaceOrder server span among:\n{}", dump()));
    assert!(
        root.parent.is_empty(),
        "the gateway's span is a root: {root}"
    );
    let trace: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let tree = || trace.iter().map(|s| format!("  {s}\n")).collect::<String>();

    // Every service and the relay took part, under the service names they export with.
    let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for service in [
        "gateway",
        "orders",
        "payments",
        "inventory",
        "notifications",
    ] {
        assert!(
            services.contains(service),
            "no span from {service} in the trace:\n{}",
            tree()
        );
    }
    let relay: Vec<&&Received> = trace
        .iter()
        .filter(|s| s.name == "outbox deliver" && s.service == "orders")
        .collect();
    assert!(
        !relay.is_empty(),
        "no outbox relay span in the trace:\n{}",
        tree()
    );

    // A tree: one root, every other span's parent is in the trace.
    let by_id: HashMap<&str, &Received> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    assert_eq!(by_id.len(), trace.len(), "span ids are unique");
    for span in &trace {
        if span.span_id != root.span_id {
            assert!(
                by_id.contains_key(span.parent.as_str()),
                "{span} has no parent in the trace:\n{}",
                tree()
            );
        }
    }

    // Each hop: the callee's server span is a child of the caller's client span for the
    // same method, and that client span is a child of the caller's own work.
    for span in trace
        .iter()
        .filter(|s| s.kind == SpanKind::Server && s.span_id != root.span_id)
    {
        let client = by_id[span.parent.as_str()];
        assert_eq!(
            client.kind,
            SpanKind::Client,
            "{span}'s parent is {client}:\n{}",
            tree()
        );
        assert_eq!(client.name, span.name, "{span} under {client}");
        assert_ne!(client.service, span.service, "{span} under {client}");
        assert_eq!(
            span.attributes.get("rpc.system").map(String::as_str),
            Some("grpc")
        );
        assert_eq!(
            span.attributes
                .get("rpc.grpc.status_code")
                .map(String::as_str),
            Some("0"),
            "{span}"
        );
        assert_eq!(
            span.attributes.get("lab.service"),
            Some(&span.service),
            "{span}"
        );
    }
    let server = |service: &str, name: &str| {
        trace
            .iter()
            .find(|s| s.kind == SpanKind::Server && s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {service} {name} server span:\n{}", tree()))
    };
    let orders = server("orders", "shop.v1.Orders/CreateOrder");
    assert_eq!(by_id[orders.parent.as_str()].service, "gateway");
    assert_eq!(
        by_id[by_id[orders.parent.as_str()].parent.as_str()].span_id,
        root.span_id
    );
    for (service, name) in [
        ("inventory", "shop.v1.Inventory/Reserve"),
        ("payments", "shop.v1.Payments/Charge"),
    ] {
        let client = by_id[server(service, name).parent.as_str()];
        assert_eq!(
            client.parent, orders.span_id,
            "{client} is a child of orders' CreateOrder"
        );
    }
    // The relay continues the order's trace from the stored traceparent, and carries it
    // on to Notifications.
    let deliver = server("notifications", "shop.v1.Notifications/Deliver");
    let client = by_id[deliver.parent.as_str()];
    let relay_span = by_id[client.parent.as_str()];
    assert_eq!(
        relay_span.name, "outbox deliver",
        "{client} under {relay_span}"
    );
    assert_eq!(
        relay_span.parent, orders.span_id,
        "the relay span's parent is the order request"
    );
    eprintln!("trace:\n{}", tree());
    // OTEL_RESOURCE_ATTRIBUTES is honoured, the empty OTEL_SERVICE_NAME is not a name.
    assert!(!services.contains("unknown_service"), "{services:?}");
}

/// A malformed endpoint stops the service at start with a message naming the variable and
/// the value, not a panic and not a service running without its traces.
#[tokio::test]
async fn a_bad_endpoint_is_refused_at_start_naming_the_variable() {
    let gateway = frlab::stack::find_binary("gateway", None).expect("the gateway binary");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(gateway);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir.path())
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4317")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the gateway exits by itself")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT=\"jaeger:4317\""),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "it never got ready"
    );
}
