//! Mapping of internal failures to deliberate gRPC codes, in one place.
//!
//! Also [`MalformedRequestLayer`]: tonic answers a request body that is not valid protobuf
//! with INTERNAL (a server fault, retryable by some clients); it is the caller's fault, so
//! the layer turns it into INVALID_ARGUMENT.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use lab_store::IdempotencyError;
use tonic::{Code, Status};

/// A database error as the caller sees it: pool exhaustion or a lost connection is
/// UNAVAILABLE (retryable), anything else INTERNAL. The detail goes to the log.
pub fn db(err: lab_store::DbError) -> Status {
    if err.is_unavailable() {
        tracing::warn!("database unavailable: {err}");
        Status::unavailable(format!("database unavailable: {err}"))
    } else {
        tracing::error!("database error: {err}");
        Status::internal(format!("database error: {err}"))
    }
}

/// An idempotency-store error: the store being unreachable is UNAVAILABLE.
pub fn store(err: lab_store::StoreError) -> Status {
    tracing::warn!("idempotency store: {err}");
    Status::unavailable(format!("idempotency store: {err}"))
}

/// Why the idempotency protocol refused a request: the key reused with other parameters is
/// FAILED_PRECONDITION (naming the key and every field that differs); the key still in
/// flight when the caller's wait ran out is ABORTED (retry later with the same key); the
/// store failing is UNAVAILABLE.
pub fn idempotency(err: IdempotencyError) -> Status {
    match err {
        IdempotencyError::Mismatch { .. } => Status::failed_precondition(err.to_string()),
        IdempotencyError::InFlight { .. } => Status::aborted(err.to_string()),
        IdempotencyError::Store(e) => store(e),
    }
}

/// A downstream's error as our caller sees it: the code is kept (so a retryable failure
/// stays retryable upstream) and the message says which hop failed.
pub fn downstream(hop: &str, status: &Status) -> Status {
    Status::new(status.code(), format!("{hop}: {}", status.message()))
}

/// What tonic's protobuf codec says when a body does not decode.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// Server layer: a request body that fails to decode is answered INVALID_ARGUMENT naming
/// the method, instead of tonic's INTERNAL. Unary calls answer a decode failure
/// trailers-only, so the status is in the response headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct MalformedRequestLayer;

impl<S> tower::Layer<S> for MalformedRequestLayer {
    type Service = MalformedRequest<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MalformedRequest { inner }
    }
}

#[derive(Clone, Debug)]
pub struct MalformedRequest<S> {
    inner: S,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for MalformedRequest<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MalformedRequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        // A `Uri` clone shares its bytes: no allocation on the path of every request.
        let uri = req.uri().clone();
        MalformedRequestFuture {
            inner: self.inner.call(req),
            uri,
        }
    }
}

#[pin_project::pin_project]
pub struct MalformedRequestFuture<F> {
    #[pin]
    inner: F,
    uri: http::Uri,
}

impl<F, ResB, E> Future for MalformedRequestFuture<F>
where
    F: Future<Output = Result<http::Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        // Only a response that carries a status in its headers can be a decode failure.
        if res.headers().contains_key("grpc-status")
            && let Some(status) = Status::from_header_map(res.headers())
            && status.code() == Code::Internal
            && status.message().starts_with(DECODE_FAILURE)
        {
            let headers = res.headers_mut();
            for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                headers.remove(name);
            }
            let invalid = Status::invalid_argument(format!(
                "request: the body of {} is not a valid protobuf message ({})",
                this.uri.path(),
                status.message()
            ));
            if invalid.add_header(headers).is_err() {
                tracing::warn!(path = this.uri.path(), "could not rewrite a decode failure");
            }
        }
        Poll::Ready(Ok(res))
    }
}
