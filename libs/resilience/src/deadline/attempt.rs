//! One attempt: its timer and the `grpc-timeout` the callee sees.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::timeout::error::Elapsed;
use tower::{Layer, Service};

use super::grpc_timeout::{GRPC_TIMEOUT, format_grpc_timeout, header_timeout};
use super::{Deadline, DeadlineExceeded, TimeoutConfig};
use crate::BoxError;

/// Innermost layer of a client stack, once per attempt: the attempt's timer is the earlier of
/// `per_try_ms` and what is left of the call's [`Deadline`] (or, without one, of a
/// `grpc-timeout` the caller set), and the outgoing `grpc-timeout` is set to it on every
/// attempt — a retry after 100 ms of a 300 ms deadline sends `200m`, so the callee never
/// works for an answer nobody awaits. When the timer fires the attempt ends with
/// [`DeadlineExceeded`] if the call's deadline passed (not retryable: no time is left), else
/// with tower's [`Elapsed`] (a per-try timeout, retryable as DEADLINE_EXCEEDED when the
/// profile says so). With neither a per-try timeout nor a deadline it passes the request on
/// untouched.
#[derive(Clone, Debug, Default)]
pub struct AttemptTimeoutLayer {
    per_try: Option<Duration>,
}

impl AttemptTimeoutLayer {
    pub fn new(per_try: Option<&TimeoutConfig>) -> Self {
        Self {
            per_try: per_try.map(|t| Duration::from_millis(t.per_try_ms)),
        }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            per_try: self.per_try,
        }
    }
}

/// The service [`AttemptTimeoutLayer`] builds.
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S> {
    inner: S,
    per_try: Option<Duration>,
}

impl<S, B> Service<http::Request<B>> for AttemptTimeout<S>
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
        let deadline = [
            req.extensions().get::<Deadline>().map(|d| d.0),
            header_timeout(req.headers()).and_then(|t| now.checked_add(t)),
        ]
        .into_iter()
        .flatten()
        .min();
        let per_try = self.per_try.and_then(|t| now.checked_add(t));
        let Some(timer) = [deadline, per_try].into_iter().flatten().min() else {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        };
        if deadline.is_some_and(|d| d <= now) {
            let err = DeadlineExceeded("no time left for another attempt".into());
            return Box::pin(async move { Err(Box::new(err) as BoxError) });
        }

        req.headers_mut()
            .insert(GRPC_TIMEOUT, format_grpc_timeout(timer - now));
        let fut = self.inner.call(req);
        Box::pin(async move {
            tokio::select! {
                biased;
                result = fut => result.map_err(Into::into),
                () = tokio::time::sleep_until(timer) => {
                    if deadline.is_some_and(|d| d <= Instant::now()) {
                        Err(Box::new(DeadlineExceeded(format!(
                            "the call's deadline passed during an attempt of {} ms",
                            (timer - now).as_millis()
                        ))) as BoxError)
                    } else {
                        Err(Box::new(Elapsed::new()) as BoxError)
                    }
                }
            }
        })
    }
}
