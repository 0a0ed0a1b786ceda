//! Spans for gRPC calls, and W3C trace context on the wire.
//!
//! - [`ServerTraceLayer`]: one `server` span per incoming RPC, named
//!   `shop.v1.Payments/Charge`, with `rpc.system`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code` and `lab.service`; its parent is the span named by the incoming
//!   `traceparent`/`tracestate` metadata, so a call continues its caller's trace. The
//!   handler runs inside it, so its downstream calls are its children.
//! - [`ClientTrace`]: one `client` span per attempt, child of the current span, whose
//!   context is injected into the outgoing request's headers. It wraps the channel, below
//!   the resilience stack's retry and hedge layers, so every attempt (a retry, a hedge) is a
//!   span of its own and carries its own `traceparent`.
//!
//! Both are built enabled only when tracing is [`super::active`]; disabled, they pass calls
//! through untouched and create nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{HeaderExtractor, HeaderInjector};

/// `/shop.v1.Payments/Charge` -> (`shop.v1.Payments`, `Charge`).
fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// The gRPC code of a unary response as its headers show it: a trailers-only response (every
/// error tonic sends) carries `grpc-status` there; one without it is OK (in its trailers).
fn response_code<B>(res: &http::Response<B>) -> tonic::Code {
    res.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok)
}

#[derive(Clone, Copy, Debug)]
enum Side {
    Server,
    Client,
}

impl Side {
    /// OpenTelemetry's gRPC conventions: a client span fails on any non-OK code, a server
    /// span only on codes that mean the server failed.
    fn is_error(self, code: tonic::Code) -> bool {
        use tonic::Code::*;
        match self {
            Side::Client => code != Ok,
            Side::Server => matches!(
                code,
                Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
            ),
        }
    }
}

/// Polls the call inside its span and records the outcome on it.
#[pin_project::pin_project]
pub struct Traced<F> {
    #[pin]
    inner: F,
    span: Option<(Span, Side)>,
}

impl<F> Traced<F> {
    /// Tracing is off: the call as it is.
    fn untraced(inner: F) -> Self {
        Self { inner, span: None }
    }

    /// Makes the call inside `span`, and will poll it inside the span too.
    fn in_span(span: Span, side: Side, call: impl FnOnce() -> F) -> Self {
        let inner = {
            let _entered = span.enter();
            call()
        };
        Self {
            inner,
            span: Some((span, side)),
        }
    }
}

impl<F, B, E> Future for Traced<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some((span, side)) = this.span.as_ref() else {
            return this.inner.poll(cx);
        };
        let out = {
            let _entered = span.enter();
            std::task::ready!(this.inner.poll(cx))
        };
        // A transport failure reaches the caller as UNAVAILABLE.
        let code = match &out {
            Ok(res) => response_code(res),
            Err(_) => tonic::Code::Unavailable,
        };
        span.record("rpc.grpc.status_code", code as i64);
        if side.is_error(code) {
            span.record("otel.status_code", "error");
        }
        *this.span = None;
        Poll::Ready(out)
    }
}

/// One server span per incoming RPC; see the module docs. Sits right inside the server
/// metrics layer, so refusals (shed, expired deadline, injected faults) are spans too.
#[derive(Clone, Debug)]
pub struct ServerTraceLayer {
    service: &'static str,
    enabled: bool,
}

impl ServerTraceLayer {
    /// Enabled when tracing is [`super::active`] in this process.
    pub fn new(service: &'static str) -> Self {
        Self::with_enabled(service, super::active())
    }

    pub fn with_enabled(service: &'static str, enabled: bool) -> Self {
        Self { service, enabled }
    }
}

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace {
            inner,
            service: self.service,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
    service: &'static str,
    enabled: bool,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for ServerTrace<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Traced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        if !self.enabled {
            return Traced::untraced(self.inner.call(req));
        }
        let path = req.uri().path();
        let (service, method) = split_path(path);
        // `parent: None`: an RPC's parent is its caller, never whatever span happens to be
        // current on this connection's task.
        let span = tracing::info_span!(
            parent: None,
            "grpc.server",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            lab.service = self.service,
        );
        // Extracted onto an empty context: without a valid `traceparent` the span is a root
        // (`extract` alone would fall back to whatever context is active on this thread).
        let parent = TraceContextPropagator::new().extract_with_context(
            &opentelemetry::Context::new(),
            &HeaderExtractor(req.headers()),
        );
        let _ = span.set_parent(parent);
        Traced::in_span(span, Side::Server, || self.inner.call(req))
    }
}

/// One client span per attempt on a downstream hop; see the module docs. Wraps the
/// channel itself (the innermost position of the client stack).
#[derive(Clone, Debug)]
pub struct ClientTrace<S> {
    inner: S,
    hop: Arc<str>,
    enabled: bool,
}

impl<S> ClientTrace<S> {
    /// Enabled when tracing is [`super::active`] in this process.
    pub fn new(hop: &str, inner: S) -> Self {
        Self::with_enabled(hop, inner, super::active())
    }

    pub fn with_enabled(hop: &str, inner: S, enabled: bool) -> Self {
        Self {
            inner,
            hop: hop.into(),
            enabled,
        }
    }
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for ClientTrace<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Traced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqB>) -> Self::Future {
        if !self.enabled {
            return Traced::untraced(self.inner.call(req));
        }
        let path = req.uri().path();
        let (service, method) = split_path(path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            peer.service = &*self.hop,
        );
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut HeaderInjector(req.headers_mut()));
        Traced::in_span(span, Side::Client, || self.inner.call(req))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tower::{Service, ServiceExt};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps every finished span in memory.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Recorder(pub Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// A provider exporting each span synchronously into the returned list.
    pub(crate) fn recording_provider() -> (SdkTracerProvider, Arc<Mutex<Vec<SpanData>>>) {
        let recorder = Recorder::default();
        let spans = recorder.0.clone();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(recorder)
            .build();
        (provider, spans)
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    fn grpc_request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("http://svc{path}"))
            .body(())
            .unwrap()
    }

    fn answering(
        code: Option<i32>,
        seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(move |req: http::Request<()>| {
            seen.lock().unwrap().push(req.headers().clone());
            let mut res = http::Response::new(());
            if let Some(code) = code {
                res.headers_mut()
                    .insert("grpc-status", code.to_string().parse().unwrap());
            }
            std::future::ready(Ok(res))
        })
    }

    #[tokio::test]
    async fn the_server_span_continues_the_callers_trace_and_records_the_code() {
        let (provider, spans) = recording_provider();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t"))),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut svc = tower::Layer::layer(
            &ServerTraceLayer::with_enabled("payments", true),
            answering(Some(14), seen),
        );
        let mut req = grpc_request("/shop.v1.Payments/Charge");
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        req.headers_mut()
            .insert("traceparent", caller.parse().unwrap());
        svc.ready().await.unwrap().call(req).await.unwrap();
        let spans = spans.lock().unwrap();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.name, "shop.v1.Payments/Charge");
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(
            s.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            s.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(s.parent_span_is_remote);
        assert_eq!(attr(s, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attr(s, "rpc.service").as_deref(), Some("shop.v1.Payments"));
        assert_eq!(attr(s, "rpc.method").as_deref(), Some("Charge"));
        assert_eq!(attr(s, "rpc.grpc.status_code").as_deref(), Some("14"));
        assert_eq!(attr(s, "lab.service").as_deref(), Some("payments"));
        assert!(matches!(
            s.status,
            opentelemetry::trace::Status::Error { .. }
        ));
    }

    #[tokio::test]
    async fn without_a_traceparent_the_server_span_is_a_root() {
        let (provider, spans) = recording_provider();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t"))),
        );
        let outer = tracing::info_span!("unrelated").entered();
        let mut svc = tower::Layer::layer(
            &ServerTraceLayer::with_enabled("gateway", true),
            answering(None, Default::default()),
        );
        svc.ready()
            .await
            .unwrap()
            .call(grpc_request("/shop.v1.Gateway/PlaceOrder"))
            .await
            .unwrap();
        drop(outer);
        let spans = spans.lock().unwrap();
        let server = spans
            .iter()
            .find(|s| s.name == "shop.v1.Gateway/PlaceOrder")
            .unwrap();
        assert_eq!(server.parent_span_id, SpanId::INVALID);
        assert_eq!(attr(server, "rpc.grpc.status_code").as_deref(), Some("0"));
        assert!(matches!(server.status, opentelemetry::trace::Status::Unset));
    }

    #[tokio::test]
    async fn each_attempt_is_a_client_span_whose_context_goes_out_in_the_headers() {
        let (provider, spans) = recording_provider();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t"))),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut client =
            ClientTrace::with_enabled("payments", answering(Some(0), seen.clone()), true);
        let handler = tracing::info_span!("handler");
        let handler_cx = handler.context().span().span_context().clone();
        async {
            for _ in 0..2 {
                client
                    .ready()
                    .await
                    .unwrap()
                    .call(grpc_request("/shop.v1.Payments/Charge"))
                    .await
                    .unwrap();
            }
        }
        .instrument(handler.clone())
        .await;
        drop(handler);
        let spans = spans.lock().unwrap();
        let attempts: Vec<_> = spans
            .iter()
            .filter(|s| s.span_kind == SpanKind::Client)
            .collect();
        assert_eq!(attempts.len(), 2, "one span per attempt");
        let seen = seen.lock().unwrap();
        for (attempt, headers) in attempts.iter().zip(seen.iter()) {
            assert_eq!(attempt.parent_span_id, handler_cx.span_id());
            assert_eq!(attempt.span_context.trace_id(), handler_cx.trace_id());
            assert_eq!(attr(attempt, "peer.service").as_deref(), Some("payments"));
            let tp = headers["traceparent"].to_str().unwrap();
            assert_eq!(
                tp,
                format!(
                    "00-{}-{}-01",
                    attempt.span_context.trace_id(),
                    attempt.span_context.span_id()
                ),
                "the header names this attempt's span"
            );
        }
        assert_ne!(
            attempts[0].span_context.span_id(),
            attempts[1].span_context.span_id()
        );
    }

    #[tokio::test]
    async fn disabled_layers_create_and_inject_nothing() {
        let (provider, spans) = recording_provider();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t"))),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut client =
            ClientTrace::with_enabled("payments", answering(None, seen.clone()), false);
        let mut server = tower::Layer::layer(
            &ServerTraceLayer::with_enabled("payments", false),
            answering(None, seen.clone()),
        );
        let _handler = tracing::info_span!("handler").entered();
        client
            .ready()
            .await
            .unwrap()
            .call(grpc_request("/a.B/C"))
            .await
            .unwrap();
        server
            .ready()
            .await
            .unwrap()
            .call(grpc_request("/a.B/C"))
            .await
            .unwrap();
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .all(|h| h.get("traceparent").is_none())
        );
        assert!(spans.lock().unwrap().is_empty());
    }

    use tracing::Instrument;
}
