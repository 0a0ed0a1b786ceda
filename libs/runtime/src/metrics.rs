//! The Prometheus registry of one service and the server-side gRPC counters.
//!
//! [`ServerMetricsLayer`] is the outermost layer of every server, so
//! `rpc_server_requests_total` counts every attempt that reached the process, before any
//! fault, admission or deadline check: it is the numerator of retry amplification.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// `rpc_server_requests_total{method}` is the series of this counter family.
pub const SERVER_REQUESTS: &str = "rpc_server_requests";
/// gRPC requests received, counted on arrival (the numerator of retry amplification).
pub const SERVER_REQUESTS_TOTAL: &str = "rpc_server_requests_total";
/// `rpc_server_responses_total{method, code}` is the series of this counter family.
pub const SERVER_RESPONSES: &str = "rpc_server_responses";
/// gRPC responses sent, by method and status code.
pub const SERVER_RESPONSES_TOTAL: &str = "rpc_server_responses_total";
/// Histogram of the time from arrival to response headers, by method.
pub const SERVER_DURATION: &str = "rpc_server_duration_seconds";
/// The cumulative buckets of [`SERVER_DURATION`] (`le` label, seconds).
pub const SERVER_DURATION_BUCKET: &str = "rpc_server_duration_seconds_bucket";

/// Latency buckets from 1 ms to about 16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCodeLabels {
    pub method: String,
    pub code: String,
}

/// Server-side request metrics, shared by every connection of a server.
#[derive(Clone)]
pub struct ServerMetrics {
    requests: Family<MethodLabels, Counter>,
    responses: Family<MethodCodeLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl ServerMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            SERVER_REQUESTS,
            "gRPC requests received, counted on arrival before any fault or admission check",
            m.requests.clone(),
        );
        registry.register(
            SERVER_RESPONSES,
            "gRPC responses sent, by status code",
            m.responses.clone(),
        );
        registry.register(
            SERVER_DURATION,
            "Time from arrival to response headers",
            m.duration.clone(),
        );
        m
    }

    /// Requests received for `method` (`/shop.v1.Payments/Charge`) so far.
    pub fn requests(&self, method: &str) -> u64 {
        self.requests
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .get()
    }
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

/// Name of a gRPC status code as Prometheus labels and reports use it (`OK`, `UNAVAILABLE`).
pub use lab_proto::codes::code_name;

#[derive(Clone, Debug)]
pub struct ServerMetricsLayer {
    metrics: ServerMetrics,
}

impl ServerMetricsLayer {
    pub fn new(metrics: ServerMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ServerMetricsLayer {
    type Service = ServerMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerMetricsService<S> {
    inner: S,
    metrics: ServerMetrics,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for ServerMetricsService<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let method = req.uri().path().to_string();
        let labels = MethodLabels { method };
        self.metrics.requests.get_or_create(&labels).inc();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // Unary errors are trailers-only responses: the status is in the headers. A
            // response without it carries OK (in its trailers).
            let code = match &res {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(tonic::Code::from_i32)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Internal,
            };
            metrics
                .duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            metrics
                .responses
                .get_or_create(&MethodCodeLabels {
                    method: labels.method,
                    code: code_name(code).to_string(),
                })
                .inc();
            res
        })
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// A registry shared read-only once the service has registered everything.
pub type SharedRegistry = Arc<Registry>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The series names readers use are the ones the families really write.
    #[test]
    fn series_names_match_the_rendered_families() {
        let mut registry = Registry::default();
        let metrics = ServerMetrics::new(&mut registry);
        let labels = MethodLabels {
            method: "/m".into(),
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics.duration.get_or_create(&labels).observe(0.1);
        metrics
            .responses
            .get_or_create(&MethodCodeLabels {
                method: "/m".into(),
                code: code_name(tonic::Code::Ok).into(),
            })
            .inc();
        let text = render(&registry);
        for series in [
            SERVER_REQUESTS_TOTAL,
            SERVER_RESPONSES_TOTAL,
            SERVER_DURATION_BUCKET,
        ] {
            assert!(text.contains(&format!("\n{series}{{")), "{series}:\n{text}");
        }
        assert!(text.contains("code=\"OK\""), "{text}");
    }
}
