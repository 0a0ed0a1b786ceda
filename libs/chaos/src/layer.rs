//! The server-side fault layer: outage, error and latency faults act on a service's calls
//! here, in front of its handlers.
//!
//! Why a tower layer over the server's routes rather than code in each handler: the five
//! services get the same faults with no change to their business code, the injected answer
//! is a real gRPC status (a trailers-only response, exactly what a failing server sends), and
//! the layer sits inside the server's resilience stack and behind its request counter, so
//! an attempt is counted before the fault refuses it (retry amplification stays exact).
//!
//! What it does to a call whose path the fault matches:
//! - outage: answers UNAVAILABLE without calling the service;
//! - error, fail-fast: with the fault's probability, answers its code without calling the
//!   service;
//! - error, fail-slow: calls the service (its normal service time is spent, the work is
//!   wasted), then answers the code instead of the service's response;
//! - latency: sleeps one draw, then calls the service. Unless `latency_in_handler`: payments
//!   draws the latency itself with [`FaultSet::extra_latency`] while it holds a capacity
//!   slot, since a slow processor holds its slot; sleeping here would wait in front of the
//!   queue instead.
//!
//! Brownout and lock-hold faults change capacity and locking inside the service; the layer
//! leaves them to the service's hooks.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

use crate::faults::{FaultSet, Injection};

/// Metadata key naming the fault that produced an injected status, so a client (or a
/// curious human with grpcurl) can tell an injected failure from a real one.
pub const INJECTED_BY: &str = "x-lab-fault";

/// Applies a [`FaultSet`]'s outage, error and latency faults to every call.
#[derive(Clone, Debug)]
pub struct FaultLayer {
    faults: FaultSet,
    latency_in_handler: bool,
}

impl FaultLayer {
    /// `latency_in_handler`: the service applies latency faults itself (through
    /// [`FaultSet::extra_latency`]); the layer then adds none.
    pub fn new(faults: FaultSet, latency_in_handler: bool) -> Self {
        Self {
            faults,
            latency_in_handler,
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            faults: self.faults.clone(),
            latency_in_handler: self.latency_in_handler,
        }
    }
}

/// The service [`FaultLayer`] makes. Errors of the inner service pass through unchanged;
/// injected failures are responses.
#[derive(Clone, Debug)]
pub struct FaultService<S> {
    inner: S,
    faults: FaultSet,
    latency_in_handler: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of [`FaultService`]: the inner call untouched when no fault acts, else the
/// injected behaviour.
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture<F, T> {
    Passthrough(#[pin] F),
    Injected(BoxFuture<T>),
}

impl<F, T> Future for ResponseFuture<F, T>
where
    F: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            ResponseFutureProj::Passthrough(f) => f.poll(cx),
            ResponseFutureProj::Injected(f) => f.as_mut().poll(cx),
        }
    }
}

fn injected_response<B: Default>(mut status: tonic::Status, fault: &str) -> http::Response<B> {
    if let Ok(value) = fault.parse() {
        status.metadata_mut().insert(INJECTED_BY, value);
    }
    status.into_http()
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for FaultService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let injection = self
            .faults
            .decide(req.uri().path(), !self.latency_in_handler);
        if injection.is_none() {
            return ResponseFuture::Passthrough(self.inner.call(req));
        }
        let Injection { delay, fail } = injection;
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::Injected(Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match fail {
                None => inner.call(req).await,
                Some(failure) if failure.after_service => {
                    // Fail-slow: the service does its work, then the answer is lost.
                    let _wasted = inner.call(req).await;
                    Ok(injected_response(failure.status, &failure.fault))
                }
                Some(failure) => Ok(injected_response(failure.status, &failure.fault)),
            }
        }))
    }
}
