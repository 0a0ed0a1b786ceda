//! Making unary gRPC requests replayable, for retries and hedges.
//!
//! A client layer sees `http::Request<tonic::body::Body>`: a stream that can be read once.
//! To send the same call again, the request must be kept. [`BufferLayer`] (above the retry
//! and hedge layers) reads the whole body into [`Bytes`] — a unary request is one small
//! message — and passes on `http::Request<`[`ReplayBody`]`>`, whose clones are cheap
//! (reference-counted) and always replay from the start. [`clone_request`] copies such a
//! request for another attempt. [`UnbufferLayer`] (innermost, just above the tonic
//! `Channel`) turns the body back into `tonic::body::Body`.
//!
//! The body is capped ([`DEFAULT_BODY_LIMIT`], 4 MiB, tonic's default maximum message size)
//! so a streaming call put through this stack by mistake fails with [`BodyTooLarge`] rather
//! than being held in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{Layer, Service};

use crate::BoxError;

/// Largest request body [`BufferLayer`] keeps, by default.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A request body held in memory. A clone replays the whole body from the start, even when
/// the original has been (partly) sent.
#[derive(Debug, Default)]
pub struct ReplayBody {
    data: Bytes,
    trailers: Option<HeaderMap>,
    /// What has been yielded so far.
    sent: Sent,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Sent {
    #[default]
    Nothing,
    Data,
    All,
}

impl ReplayBody {
    pub fn new(data: Bytes) -> Self {
        Self {
            data,
            trailers: None,
            sent: Sent::Nothing,
        }
    }

    /// A body with trailers (gRPC requests have none; kept for completeness).
    pub fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data,
            trailers,
            sent: Sent::Nothing,
        }
    }

    /// The whole body.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

impl Clone for ReplayBody {
    fn clone(&self) -> Self {
        Self::with_trailers(self.data.clone(), self.trailers.clone())
    }
}

impl From<Bytes> for ReplayBody {
    fn from(data: Bytes) -> Self {
        Self::new(data)
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent == Sent::Nothing {
            this.sent = Sent::Data;
            if !this.data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(this.data.clone()))));
            }
        }
        if this.sent == Sent::Data {
            this.sent = Sent::All;
            if let Some(trailers) = this.trailers.clone() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        match self.sent {
            Sent::Nothing => self.data.is_empty() && self.trailers.is_none(),
            Sent::Data => self.trailers.is_none(),
            Sent::All => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.sent {
            Sent::Nothing => SizeHint::with_exact(self.data.len() as u64),
            _ => SizeHint::with_exact(0),
        }
    }
}

/// A copy of `req` for another attempt: method, URI, version, headers, body (from the
/// start) and every extension (the [`Deadline`](crate::deadline::Deadline), the budget
/// mark, tonic's `GrpcMethod`; http 1.x extensions are `Clone`).
pub fn clone_request(req: &http::Request<ReplayBody>) -> http::Request<ReplayBody> {
    let mut clone = http::Request::new(req.body().clone());
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    clone
}

/// The request body was larger than the [`BufferLayer`]'s limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request body larger than {limit} bytes cannot be buffered for retries")]
pub struct BodyTooLarge {
    pub limit: usize,
}

/// Reads the request body into memory so that the layers below can replay it.
#[derive(Clone, Copy, Debug)]
pub struct BufferLayer {
    limit: usize,
}

impl BufferLayer {
    /// Buffers bodies up to [`DEFAULT_BODY_LIMIT`].
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_BODY_LIMIT)
    }

    /// Buffers bodies up to `limit` bytes; larger ones fail with [`BodyTooLarge`].
    pub fn with_limit(limit: usize) -> Self {
        Self { limit }
    }
}

impl Default for BufferLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for BufferLayer {
    type Service = Buffer<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Buffer {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`BufferLayer`].
#[derive(Clone, Debug)]
pub struct Buffer<S> {
    inner: S,
    limit: usize,
}

impl<S, B> Service<http::Request<B>> for Buffer<S>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    S: Service<http::Request<ReplayBody>> + Clone + Send + 'static,
    S::Response: Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The service that was polled ready goes with the call; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let collected = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<LengthLimitError>() {
                    Box::new(BodyTooLarge { limit }) as BoxError
                } else {
                    e
                }
            })?;
            let trailers = collected.trailers().cloned();
            let body = ReplayBody::with_trailers(collected.to_bytes(), trailers);
            inner
                .call(http::Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
}

/// Turns the replayable body back into tonic's body, just above the `Channel`.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnbufferLayer;

impl UnbufferLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for UnbufferLayer {
    type Service = Unbuffer<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Unbuffer { inner }
    }
}

/// See [`UnbufferLayer`].
#[derive(Clone, Debug)]
pub struct Unbuffer<S> {
    inner: S,
}

impl<S> Service<http::Request<ReplayBody>> for Unbuffer<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReplayBody>) -> Self::Future {
        self.inner.call(req.map(tonic::body::Body::new))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::deadline::Deadline;

    async fn read(body: impl Body<Data = Bytes, Error = impl std::fmt::Debug>) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    fn streamed(chunks: &[&'static str]) -> tonic::body::Body {
        let frames = chunks
            .iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect::<Vec<_>>();
        tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn clones_replay_the_whole_body() {
        let mut body = ReplayBody::new(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
        assert_eq!(
            read(body.clone()).await,
            "hello",
            "a clone of a sent body replays"
        );
        assert!(ReplayBody::default().is_end_stream());
        assert_eq!(read(ReplayBody::default()).await, "");
    }

    #[tokio::test]
    async fn clone_request_copies_everything_that_matters() {
        let deadline = Deadline(tokio::time::Instant::now() + Duration::from_secs(1));
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://payments/shop.v1.Payments/Charge")
            .version(http::Version::HTTP_2)
            .header("idempotency-key", "k1")
            .body(ReplayBody::new(Bytes::from_static(b"msg")))
            .unwrap();
        req.extensions_mut().insert(deadline);
        let copy = clone_request(&req);
        assert_eq!(copy.method(), http::Method::POST);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), http::Version::HTTP_2);
        assert_eq!(copy.headers()["idempotency-key"], "k1");
        assert_eq!(copy.extensions().get::<Deadline>(), Some(&deadline));
        assert_eq!(read(copy.into_body()).await, "msg");
    }

    #[tokio::test]
    async fn buffer_collects_and_unbuffer_restores_the_body() {
        let svc = ServiceBuilder::new()
            .layer(BufferLayer::new())
            .map_request(|req: http::Request<ReplayBody>| {
                assert_eq!(req.body().data(), "abcdef");
                req
            })
            .layer(UnbufferLayer::new())
            .service(service_fn(
                |req: http::Request<tonic::body::Body>| async move {
                    Ok::<_, Infallible>(read(req.into_body()).await)
                },
            ));
        let req = http::Request::new(streamed(&["abc", "def"]));
        assert_eq!(svc.oneshot(req).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn buffer_refuses_bodies_over_the_limit() {
        let svc =
            BufferLayer::with_limit(4).layer(service_fn(|_: http::Request<ReplayBody>| async {
                Ok::<_, Infallible>(())
            }));
        let err = svc
            .oneshot(http::Request::new(streamed(&["abc", "def"])))
            .await
            .unwrap_err();
        assert!(err.is::<BodyTooLarge>(), "{err}");
    }
}
