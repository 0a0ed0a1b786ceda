//! The client side: one absolute deadline per logical call.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::grpc_timeout::header_timeout;
use super::{Deadline, DeadlineConfig, DeadlineExceeded, DeadlineMetrics, current};
use crate::BoxError;

/// Fixes the call's deadline — the earliest of the caller's own `grpc-timeout`
/// (`Request::set_timeout`), the incoming deadline ([`current`], when `propagate`), now +
/// `default_ms`, and a [`Deadline`] already on the request — and inserts it as the
/// [`Deadline`] extension. A call whose deadline already passed is refused without calling;
/// a call still running when it passes (retries and backoff included) ends with
/// [`DeadlineExceeded`]. It does not set the header: the attempt layer does, per attempt.
///
/// It reads the incoming deadline in `call`, on the caller's task: nothing that calls on
/// another task (a `tower::buffer::Buffer`) may sit in front of it.
#[derive(Clone, Debug)]
pub struct ClientDeadlineLayer {
    propagate: bool,
    default: Option<Duration>,
    metrics: DeadlineMetrics,
}

impl ClientDeadlineLayer {
    pub fn new(config: &DeadlineConfig, metrics: &DeadlineMetrics) -> Self {
        Self {
            propagate: config.propagate,
            default: config.default_ms.map(Duration::from_millis),
            metrics: metrics.clone(),
        }
    }

    /// `{"propagate": bool, "default_ms": n|null, "exceeded": n}` for `/state`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "propagate": self.propagate,
            "default_ms": self.default.map(|d| d.as_millis() as u64),
            "exceeded": self.metrics.client(),
        })
    }
}

impl<S> Layer<S> for ClientDeadlineLayer {
    type Service = ClientDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ClientDeadlineLayer`] builds.
#[derive(Clone, Debug)]
pub struct ClientDeadline<S> {
    inner: S,
    layer: ClientDeadlineLayer,
}

impl<S> ClientDeadline<S> {
    /// The call's deadline for a request with these headers and extensions, now.
    fn deadline<B>(&self, req: &http::Request<B>, now: Instant) -> Option<Instant> {
        let candidates = [
            header_timeout(req.headers()).and_then(|t| now.checked_add(t)),
            self.layer.propagate.then(current).flatten(),
            self.layer.default.and_then(|t| now.checked_add(t)),
            req.extensions().get::<Deadline>().map(|d| d.0),
        ];
        candidates.into_iter().flatten().min()
    }
}

impl<S, B> Service<http::Request<B>> for ClientDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let now = Instant::now();
        let Some(at) = self.deadline(&req, now) else {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        };
        let metrics = self.layer.metrics.clone();
        if at <= now {
            metrics.client_exceeded();
            let err = DeadlineExceeded(format!(
                "the call's deadline passed {} ms before it was made",
                (now - at).as_millis()
            ));
            return Box::pin(async move { Err(Box::new(err) as BoxError) });
        }

        req.extensions_mut().insert(Deadline(at));
        let fut = self.inner.call(req);
        Box::pin(async move {
            tokio::select! {
                biased;
                result = fut => result.map_err(|e| {
                    let e: BoxError = e.into();
                    if super::is_deadline_exceeded(e.as_ref()) {
                        metrics.client_exceeded();
                    }
                    e
                }),
                () = tokio::time::sleep_until(at) => {
                    metrics.client_exceeded();
                    Err(Box::new(DeadlineExceeded(format!(
                        "the call's deadline passed after {} ms",
                        (at - now).as_millis()
                    ))) as BoxError)
                }
            }
        })
    }
}
