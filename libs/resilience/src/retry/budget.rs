//! The retry budget of one hop: tower's [`TpsBudget`], shared by the hop's retry and hedge
//! layers.
//!
//! Every first attempt deposits; every retry or hedge withdraws *when it is decided* (before
//! its backoff, not when it is sent), so a burst of failures cannot all decide to retry
//! against the same balance. With no balance there is no retry: the call returns its last
//! result. Over the window the extra attempts are thus at most `ratio` × first attempts,
//! plus `min_per_second` so that a quiet client can still retry at all.
//!
//! (tower's budget keeps integer tokens: a retry costs `floor(1 / ratio)` deposits, so a
//! ratio like 0.3 behaves as 1/3.)
//!
//! A request deposits once even when it passes both the hedge and the retry layer of its hop:
//! the first of them marks the request (an extension naming the budget), and the clones
//! made for retries and hedges keep that mark.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use super::BudgetConfig;

/// A hop's retry budget. Create one per hop ([`RetryBudget::for_hop`]) and give the same
/// `Arc` to that hop's [`RetryLayer`](super::RetryLayer) and
/// [`HedgeLayer`](crate::hedge::HedgeLayer).
#[derive(Debug)]
pub struct RetryBudget {
    tps: TpsBudget,
}

impl RetryBudget {
    /// A budget from its config (values outside the validated ranges are clamped into them,
    /// since tower's budget panics on them).
    pub fn new(config: &BudgetConfig) -> Self {
        let ratio = if config.ratio.is_finite() {
            config.ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            tps: TpsBudget::new(
                Duration::from_secs(config.window_s.clamp(1, 60)),
                config.min_per_second.min(i32::MAX as u32 - 1),
                ratio as f32,
            ),
        }
    }

    /// The shared budget for a hop whose retry config has a `budget:` block, else `None`.
    pub fn for_hop(config: &super::RetryConfig) -> Option<Arc<RetryBudget>> {
        config.budget.as_ref().map(|b| Arc::new(Self::new(b)))
    }

    /// A first attempt was made: more retries become affordable.
    pub fn deposit(&self) {
        self.tps.deposit();
    }

    /// Takes the cost of one retry or hedge; `false` (and nothing taken) when the balance
    /// cannot cover it.
    pub fn withdraw(&self) -> bool {
        self.tps.withdraw()
    }

    /// Deposits for `req` unless it already deposited into this budget (it passed the other
    /// layer of the hop first, or it is a clone made for a retry or a hedge).
    pub(crate) fn deposit_once<B>(self: &Arc<Self>, req: &mut http::Request<B>) {
        let already = req
            .extensions()
            .get::<Deposited>()
            .is_some_and(|d| Arc::ptr_eq(&d.0, self));
        if !already {
            self.deposit();
            req.extensions_mut().insert(Deposited(Arc::clone(self)));
        }
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        RetryBudget::deposit(self);
    }

    fn withdraw(&self) -> bool {
        RetryBudget::withdraw(self)
    }
}

/// The request extension saying "this call has deposited into that budget".
#[derive(Clone, Debug)]
pub(crate) struct Deposited(Arc<RetryBudget>);

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> Arc<RetryBudget> {
        Arc::new(RetryBudget::new(&BudgetConfig {
            ratio,
            min_per_second,
            window_s: 1,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_deposits_can_be_withdrawn() {
        let b = budget(0.5, 0);
        assert!(!b.withdraw(), "nothing deposited, no floor");
        b.deposit();
        assert!(!b.withdraw(), "one deposit is half a retry");
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn min_per_second_is_a_floor_and_deposits_expire() {
        let b = budget(0.0, 2);
        assert!(b.withdraw() && b.withdraw());
        assert!(!b.withdraw());

        let b = budget(1.0, 0);
        b.deposit();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            !b.withdraw(),
            "deposits older than the window no longer count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_deposits_once_per_budget() {
        let b = budget(1.0, 0);
        let other = budget(1.0, 0);
        let mut req = http::Request::new(());
        b.deposit_once(&mut req);
        b.deposit_once(&mut req);
        let mut copy = http::Request::new(());
        *copy.extensions_mut() = req.extensions().clone();
        b.deposit_once(&mut copy);
        assert!(b.withdraw());
        assert!(!b.withdraw(), "only one deposit was made");

        other.deposit_once(&mut req);
        assert!(other.withdraw(), "another hop's budget is not marked");
    }
}
