//! The tower service and its response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;
use tower::Service;

use super::state::{Outcome, Shared, Ticket};
use super::{Breaker, CircuitOpen};
use crate::BoxError;

/// A service behind a [`Breaker`]: refuses calls with [`CircuitOpen`] while the breaker is
/// open, and reports the outcome of every call it lets through.
pub struct BreakerService<S> {
    inner: S,
    breaker: Breaker,
    /// What `poll_ready` decided for the next call.
    ready: Readiness,
}

enum Readiness {
    Undecided,
    /// Let through; the guard holds the ticket (and gives a probe permit back if dropped).
    Admitted(Guard),
    /// Refused: `call` answers `CircuitOpen` without calling the inner service.
    Refused,
}

impl<S> BreakerService<S> {
    pub(super) fn new(inner: S, breaker: Breaker) -> Self {
        BreakerService {
            inner,
            breaker,
            ready: Readiness::Undecided,
        }
    }

    /// The breaker this service reports to.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S: Clone> Clone for BreakerService<S> {
    fn clone(&self) -> Self {
        // A clone decides its own admission: an admitted ticket is not shared.
        BreakerService::new(self.inner.clone(), self.breaker.clone())
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for BreakerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl<S, B, R> Service<http::Request<B>> for BreakerService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Admission is decided here, before waiting for the inner service: a refused call
        // must fail fast even when the inner service is not ready (a channel reconnecting to
        // a dead downstream may never be). A refusal is re-examined on every poll, so a
        // service polled ready long before its call does not refuse on stale information.
        if !matches!(self.ready, Readiness::Admitted(_)) {
            let shared = &self.breaker.shared;
            self.ready = match shared.admit() {
                Some(ticket) => Readiness::Admitted(Guard::new(shared.clone(), ticket)),
                None => Readiness::Refused,
            };
        }
        if let Readiness::Refused = self.ready {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                // Not sent: give a probe permit back (dropping the guard does).
                self.ready = Readiness::Undecided;
                Poll::Ready(Err(e.into()))
            }
        }
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match std::mem::replace(&mut self.ready, Readiness::Undecided) {
            Readiness::Admitted(guard) => ResponseFuture {
                kind: Kind::Called {
                    started: Instant::now(),
                    inner: self.inner.call(request),
                    guard,
                },
            },
            Readiness::Refused => {
                self.breaker.shared.rejected();
                ResponseFuture {
                    kind: Kind::Refused {
                        hop: Some(self.breaker.hop().to_owned()),
                    },
                }
            }
            Readiness::Undecided => panic!("BreakerService::call before poll_ready returned Ready"),
        }
    }
}

/// Reports a ticket's outcome exactly once: on completion, or as a release when dropped
/// before the call ended.
struct Guard {
    shared: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Guard {
    fn new(shared: Arc<Shared>, ticket: Ticket) -> Self {
        Guard {
            shared,
            ticket: Some(ticket),
        }
    }

    fn complete(&mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.complete(ticket, outcome);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.release(ticket);
        }
    }
}

/// The response future of [`BreakerService`].
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    kind: Kind<F>,
}

#[pin_project(project = KindProj)]
enum Kind<F> {
    /// Sent to the inner service.
    Called {
        #[pin]
        inner: F,
        guard: Guard,
        started: Instant,
    },
    /// Refused; the hop is taken on the (only) poll.
    Refused { hop: Option<String> },
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                inner,
                guard,
                started,
            } => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                guard.complete(Outcome {
                    code: crate::classify::code_of(&result),
                    started: *started,
                    ended: Instant::now(),
                });
                Poll::Ready(result)
            }
            KindProj::Refused { hop } => {
                let hop = hop.take().expect("ResponseFuture polled after completion");
                Poll::Ready(Err(Box::new(CircuitOpen { hop })))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Called { started, .. } => f
                .debug_struct("ResponseFuture::Called")
                .field("started", started)
                .finish_non_exhaustive(),
            Kind::Refused { hop } => f
                .debug_struct("ResponseFuture::Refused")
                .field("hop", hop)
                .finish(),
        }
    }
}
