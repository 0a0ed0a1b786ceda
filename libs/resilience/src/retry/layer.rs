//! [`RetryLayer`]: tower's own [`tower::retry::Retry`] driven by [`RetryPolicy`].
//!
//! The only additions around tower's service: the inner error is boxed (so the policy can
//! look through its cause chain), and each call deposits into the hop's budget once.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::TryFutureExt;
use futures::future::ErrInto;
use tower::{Layer, Service};

use crate::BoxError;
use crate::body::ReplayBody;

use super::{Backoff, RetryBudget, RetryConfig, RetryMetrics, RetryPolicy};

/// Retries the calls of one hop as its [`RetryConfig`] says.
///
/// Requests are `http::Request<`[`ReplayBody`]`>` (put [`crate::body::BufferLayer`] above);
/// the inner service must be `Clone` (each call keeps a handle to retry with).
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: RetryPolicy,
    budget: Option<Arc<RetryBudget>>,
    backoff: crate::retry::BackoffConfig,
}

impl RetryLayer {
    /// The retry layer of `hop`. Give it the hop's shared budget (the same `Arc` as the
    /// hop's hedge layer; [`RetryBudget::for_hop`]); `None`: retries are not budgeted.
    pub fn new(
        hop: &str,
        config: &RetryConfig,
        budget: Option<Arc<RetryBudget>>,
        metrics: &RetryMetrics,
    ) -> Self {
        Self {
            policy: RetryPolicy::new(hop, config, budget.clone(), metrics),
            budget,
            backoff: config.backoff.clone(),
        }
    }

    /// Draws jitter from an RNG seeded with `seed` (reproducible delays).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.policy = self
            .policy
            .with_backoff(Backoff::seeded(&self.backoff, seed));
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner: tower::retry::Retry::new(self.policy.clone(), BoxErrors(inner)),
            budget: self.budget.clone(),
        }
    }
}

/// See [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: tower::retry::Retry<RetryPolicy, BoxErrors<S>>,
    budget: Option<Arc<RetryBudget>>,
}

impl<S, B> Service<http::Request<ReplayBody>> for Retry<S>
where
    S: Service<http::Request<ReplayBody>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future =
        tower::retry::future::ResponseFuture<RetryPolicy, BoxErrors<S>, http::Request<ReplayBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReplayBody>) -> Self::Future {
        if let Some(budget) = &self.budget {
            budget.deposit_once(&mut req);
        }
        self.inner.call(req)
    }
}

/// The inner service with its error boxed, as the policy sees it.
#[derive(Clone, Debug)]
pub struct BoxErrors<S>(S);

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ErrInto<S::Future, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.0.call(req).err_into()
    }
}
