//! The server side: the incoming deadline, made visible to the handler and (with `enforce`)
//! enforced with DEADLINE_EXCEEDED.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::grpc_timeout::header_timeout;
use super::{Deadline, DeadlineExceeded, DeadlineMetrics, INCOMING, ServerDeadlineConfig};
use crate::BoxError;

/// How long before the deadline the server's timer fires, so that it beats tonic's own
/// timer (which answers CANCELLED) to the same deadline. Work with no more than this left
/// is refused before it starts.
pub const SERVER_MARGIN: Duration = Duration::from_millis(1);

/// Reads the incoming `grpc-timeout`, runs the inner service inside
/// [`scope`](super::scope) and, when `enforce` is set, refuses or ends calls whose deadline
/// passes with [`DeadlineExceeded`].
///
/// Place it outermost but for the arrival counter and the status mapping: the deadline is
/// fixed when the request reaches this layer, so time spent in a layer outside it (a queue,
/// an injected delay) would not count — unless that layer stamps the arrival as a
/// [`Deadline`] request extension, which this layer honours when earlier.
#[derive(Clone, Debug)]
pub struct ServerDeadlineLayer {
    enforce: bool,
    metrics: DeadlineMetrics,
}

impl ServerDeadlineLayer {
    pub fn new(config: &ServerDeadlineConfig, metrics: &DeadlineMetrics) -> Self {
        Self {
            enforce: config.enforce,
            metrics: metrics.clone(),
        }
    }

    /// `{"enforce": bool, "exceeded": n}` for `/state`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "enforce": self.enforce, "exceeded": self.metrics.server() })
    }
}

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline {
            inner,
            enforce: self.enforce,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ServerDeadlineLayer`] builds.
#[derive(Clone, Debug)]
pub struct ServerDeadline<S> {
    inner: S,
    enforce: bool,
    metrics: DeadlineMetrics,
}

impl<S, B> Service<http::Request<B>> for ServerDeadline<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let arrival = Instant::now();
        let from_header = header_timeout(req.headers()).and_then(|t| arrival.checked_add(t));
        let stamped = req.extensions().get::<Deadline>().map(|d| d.0);
        let deadline = match (from_header, stamped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        if self.enforce
            && let Some(at) = deadline
            && at.saturating_duration_since(arrival) <= SERVER_MARGIN
        {
            // Refused before any work: the caller cannot use an answer any more.
            self.metrics.server_exceeded();
            let err = DeadlineExceeded(format!(
                "the caller's deadline left {:.1} ms, not enough to start the work",
                at.saturating_duration_since(arrival).as_secs_f64() * 1000.0
            ));
            return Box::pin(async move { Err(Box::new(err) as BoxError) });
        }

        // `call` inside the scope too: a service may start work before its future is polled.
        let fut = INCOMING.sync_scope(deadline, || self.inner.call(req));
        let fut = INCOMING.scope(deadline, fut);
        match deadline.filter(|_| self.enforce) {
            None => Box::pin(async move { fut.await.map_err(Into::into) }),
            Some(at) => {
                let metrics = self.metrics.clone();
                // 1 ms early: tonic's outer timer to the same deadline would answer CANCELLED.
                let fire = at - SERVER_MARGIN;
                Box::pin(async move {
                    tokio::select! {
                        biased;
                        result = fut => result.map_err(Into::into),
                        () = tokio::time::sleep_until(fire) => {
                            metrics.server_exceeded();
                            Err(Box::new(DeadlineExceeded(format!(
                                "the caller's deadline ({} ms after arrival) passed mid-call",
                                (at - arrival).as_millis()
                            ))) as BoxError)
                        }
                    }
                })
            }
        }
    }
}
