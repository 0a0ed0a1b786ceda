//! The retry decision, as a [`tower::retry::Policy`].
//!
//! After each attempt, in this order (the first "no" returns the attempt's result as is):
//!
//! 1. the outcome: OK is final; [`CircuitOpen`] anywhere in the error's cause chain is final
//!    (the breaker chose to fail fast — retrying would just hit it again); otherwise the
//!    attempt's gRPC code ([`crate::classify::code_of`]: transport errors are UNAVAILABLE,
//!    bulkhead full / shed RESOURCE_EXHAUSTED) must be in `retry_on`;
//! 2. attempts left (`max_attempts`);
//! 3. the delay: the server's pushback when `honor_pushback` and it sent one (a negative or
//!    malformed value: final), else the [`Backoff`];
//! 4. the deadline: the call's [`Deadline`] must leave room for the delay plus
//!    `min_attempt_ms`;
//! 5. the budget: one retry withdrawn now (empty: final, counted).
//!
//! Then the retry is counted, the stored copy of the request gets
//! `grpc-previous-rpc-attempts: N` (attempts made so far), and the returned future is the
//! delay.
//!
//! tower clones the policy for every call, so the per-call state (attempts made, the last
//! delay for decorrelated jitter) lives in the policy itself; what is shared (config, RNG,
//! budget, counters) is behind an `Arc`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tonic::Code;

use crate::BoxError;
use crate::body::{ReplayBody, clone_request};
use crate::breaker::CircuitOpen;
use crate::deadline::Deadline;

use super::{Backoff, PREVIOUS_RPC_ATTEMPTS, RetryBudget, RetryConfig, RetryMetrics};

/// The retry policy of one hop; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    shared: Arc<Shared>,
    /// Attempts made so far in this call.
    attempts: u32,
    /// The delay before the previous retry of this call.
    prev_delay: Option<Duration>,
}

#[derive(Clone, Debug)]
struct Shared {
    hop: String,
    max_attempts: u32,
    retry_on: Vec<Code>,
    honor_pushback: bool,
    min_attempt: Duration,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
    retries: Counter,
    budget_exhausted: Counter,
}

/// Why an attempt's result is returned rather than retried (for traces and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Final,
    CircuitOpen,
    NotRetryable(Code),
    NoAttemptsLeft,
    PushbackSaysNo,
    Deadline,
    Budget,
}

impl RetryPolicy {
    /// The policy for `hop`. `budget` is the hop's shared budget (see
    /// [`RetryBudget::for_hop`]); `None` retries without one.
    pub fn new(
        hop: &str,
        config: &RetryConfig,
        budget: Option<Arc<RetryBudget>>,
        metrics: &RetryMetrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                hop: hop.to_string(),
                max_attempts: config.max_attempts.max(1),
                retry_on: config.retry_on.iter().map(|c| c.0).collect(),
                honor_pushback: config.honor_pushback,
                min_attempt: Duration::from_millis(config.min_attempt_ms),
                backoff: Backoff::new(&config.backoff),
                budget,
                retries: metrics.retries_counter(hop),
                budget_exhausted: metrics.budget_exhausted_counter(hop),
            }),
            attempts: 0,
            prev_delay: None,
        }
    }

    /// Replaces the backoff (e.g. a [`Backoff::seeded`] one, for reproducible jitter).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        Arc::make_mut(&mut self.shared).backoff = backoff;
        self
    }

    /// The decision after an attempt: `Ok(delay)` to retry after `delay`.
    fn decide<B>(
        &mut self,
        req: &http::Request<ReplayBody>,
        result: &Result<http::Response<B>, BoxError>,
    ) -> Result<Duration, Stop> {
        let shared = &*self.shared;
        if let Err(err) = result
            && caused_by::<CircuitOpen>(err.as_ref())
        {
            return Err(Stop::CircuitOpen);
        }
        let code = crate::classify::code_of(result);
        if code == Code::Ok {
            return Err(Stop::Final);
        }
        if !shared.retry_on.contains(&code) {
            return Err(Stop::NotRetryable(code));
        }
        if self.attempts >= shared.max_attempts {
            return Err(Stop::NoAttemptsLeft);
        }
        let delay = match pushback_of(result).filter(|_| shared.honor_pushback) {
            Some(None) => return Err(Stop::PushbackSaysNo),
            Some(Some(pushback)) => pushback,
            None => shared.backoff.delay(self.attempts, self.prev_delay),
        };
        if let Some(deadline) = req.extensions().get::<Deadline>()
            && deadline.remaining() < delay.saturating_add(shared.min_attempt)
        {
            return Err(Stop::Deadline);
        }
        if let Some(budget) = &shared.budget
            && !budget.withdraw()
        {
            shared.budget_exhausted.inc();
            return Err(Stop::Budget);
        }
        Ok(delay)
    }
}

impl<B> tower::retry::Policy<http::Request<ReplayBody>, http::Response<B>, BoxError>
    for RetryPolicy
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut http::Request<ReplayBody>,
        result: &mut Result<http::Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        match self.decide(req, result) {
            Ok(delay) => {
                self.prev_delay = Some(delay);
                self.shared.retries.inc();
                req.headers_mut()
                    .insert(PREVIOUS_RPC_ATTEMPTS, self.attempts.into());
                tracing::debug!(
                    hop = %self.shared.hop,
                    attempt = self.attempts,
                    code = ?crate::classify::code_of(result),
                    delay_ms = delay.as_millis() as u64,
                    "retrying"
                );
                Some(tokio::time::sleep(delay))
            }
            Err(Stop::Final) => None,
            Err(stop) => {
                tracing::debug!(
                    hop = %self.shared.hop,
                    attempt = self.attempts,
                    reason = ?stop,
                    "not retrying"
                );
                None
            }
        }
    }

    /// tower asks for a copy before every attempt, to have one for the next. The attempt
    /// about to be made is the last one allowed (always so with `max_attempts: 1`): no copy,
    /// and tower returns its result as it is ([`Stop::NoAttemptsLeft`] without the work).
    fn clone_request(
        &mut self,
        req: &http::Request<ReplayBody>,
    ) -> Option<http::Request<ReplayBody>> {
        (self.attempts + 1 < self.shared.max_attempts).then(|| clone_request(req))
    }
}

/// Whether an error of type `E` is anywhere in `err`'s cause chain.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The server's pushback (gRFC A6) on a response or an error status, if any;
/// `Some(None)`: do not retry.
fn pushback_of<B>(result: &Result<http::Response<B>, BoxError>) -> Option<Option<Duration>> {
    match result {
        Ok(response) => crate::classify::pushback(response),
        Err(err) => {
            let status = crate::status::to_status(err.as_ref());
            let value = status.metadata().get("grpc-retry-pushback-ms")?;
            Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(Duration::from_millis),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushback_is_read_from_responses_and_error_statuses() {
        let ok: Result<http::Response<()>, BoxError> = Ok(http::Response::builder()
            .header("grpc-retry-pushback-ms", "30")
            .body(())
            .unwrap());
        assert_eq!(pushback_of(&ok), Some(Some(Duration::from_millis(30))));

        let shed: Result<http::Response<()>, BoxError> = Err(Box::new(crate::shed::Shed {
            max_in_flight: 1,
            pushback: Some(Duration::from_millis(70)),
        }));
        assert_eq!(pushback_of(&shed), Some(Some(Duration::from_millis(70))));

        let mut status = tonic::Status::unavailable("later");
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
        let no: Result<http::Response<()>, BoxError> = Err(Box::new(status));
        assert_eq!(pushback_of(&no), Some(None));

        let none: Result<http::Response<()>, BoxError> = Err("reset".into());
        assert_eq!(pushback_of(&none), None);
    }
}
