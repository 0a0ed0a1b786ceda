//! Every error a resilience layer raises, mapped to a deliberate gRPC code — in this one
//! place. A middleware error that is not a `Status` would reach the client as UNKNOWN or a
//! broken stream, so the outermost layer of every stack is [`StatusLayer`], which turns typed
//! errors into `Status` (boxed), which tonic passes through as is.
//!
//! | error | code |
//! |---|---|
//! | [`crate::breaker::CircuitOpen`] | UNAVAILABLE |
//! | [`crate::bulkhead::BulkheadFull`], [`crate::shed::Shed`], [`crate::adaptive::LimitExceeded`], [`crate::body::BodyTooLarge`] | RESOURCE_EXHAUSTED |
//! | [`crate::deadline::DeadlineExceeded`], tower's `Elapsed`, tonic's `TimeoutExpired` | DEADLINE_EXCEEDED |
//! | a `Status` | itself |
//! | anything else (transport) | tonic's own mapping (connection refused: UNAVAILABLE) |

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};

use crate::BoxError;

/// The status a caller sees for `err`: the first error in its cause chain that we know,
/// else UNAVAILABLE (a transport failure: no answer came back).
pub fn to_status(err: &(dyn std::error::Error + Send + Sync + 'static)) -> Status {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(status) = known(e) {
            return status;
        }
        current = e.source();
    }
    Status::unavailable(format!("transport: {err}"))
}

fn known(e: &(dyn std::error::Error + 'static)) -> Option<Status> {
    if let Some(status) = e.downcast_ref::<Status>() {
        return Some(status.clone());
    }
    if let Some(e) = e.downcast_ref::<crate::breaker::CircuitOpen>() {
        return Some(Status::unavailable(e.to_string()));
    }
    if let Some(e) = e.downcast_ref::<crate::bulkhead::BulkheadFull>() {
        return Some(Status::resource_exhausted(e.to_string()));
    }
    if let Some(e) = e.downcast_ref::<crate::shed::Shed>() {
        return Some(with_pushback(
            Status::resource_exhausted(e.to_string()),
            e.pushback,
        ));
    }
    if let Some(e) = e.downcast_ref::<crate::adaptive::LimitExceeded>() {
        return Some(with_pushback(
            Status::resource_exhausted(e.to_string()),
            e.pushback,
        ));
    }
    if let Some(e) = e.downcast_ref::<crate::body::BodyTooLarge>() {
        return Some(Status::resource_exhausted(e.to_string()));
    }
    if let Some(e) = e.downcast_ref::<crate::deadline::DeadlineExceeded>() {
        return Some(Status::deadline_exceeded(e.to_string()));
    }
    if e.is::<tower::timeout::error::Elapsed>() {
        return Some(Status::deadline_exceeded("per-try timeout elapsed"));
    }
    if e.is::<tonic::TimeoutExpired>() {
        return Some(Status::deadline_exceeded("deadline exceeded"));
    }
    None
}

/// Adds the gRPC retry pushback hint (gRFC A6) to a status.
pub fn with_pushback(mut status: Status, pushback: Option<std::time::Duration>) -> Status {
    if let Some(p) = pushback
        && let Ok(v) = p.as_millis().to_string().parse()
    {
        status.metadata_mut().insert("grpc-retry-pushback-ms", v);
    }
    status
}

/// The outermost layer of every stack: errors leave it as `Status` — a concrete error type,
/// which also keeps generated tonic clients over a boxed stack free of the compiler's
/// higher-ranked `From<Box<dyn Error>>` trouble in `async fn`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusLayer;

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StatusService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct StatusService<S> {
    inner: S,
}

impl<S, Req, Res> Service<Req> for StatusService<S>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Res, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| to_status(e.into().as_ref()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(|e| to_status(e.into().as_ref())) })
    }
}
