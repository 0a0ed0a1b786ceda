//! The payment processor's finite capacity: `slots` charges at a time, a bounded queue with
//! a queue timeout, and a lognormal service time. Waiting is a sleep, never CPU, so the
//! test machine is not the bottleneck; a slot is held for the whole service time, so retries
//! consume real capacity and queues really grow.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Semaphore permits per slot: a charge normally holds one slot's worth; under a brownout
/// it holds more, so fewer charges fit (see [`Capacity::admit`]).
const PERMITS_PER_SLOT: u32 = 1000;

#[derive(Clone, Debug, PartialEq)]
pub struct CapacityConfig {
    pub slots: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
    pub service_p50: Duration,
    pub service_p95: Duration,
    pub seed: u64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            slots: 16,
            queue: 64,
            queue_timeout: Duration::from_millis(500),
            service_p50: Duration::from_millis(20),
            service_p95: Duration::from_millis(60),
            seed: 1,
        }
    }
}

/// Why a charge was not admitted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("payments is at capacity: {slots} slots busy and {waiting} charges queued")]
    QueueFull { slots: usize, waiting: usize },
    #[error("waited {waited_ms} ms in the payments queue without a free slot")]
    QueueTimeout { waited_ms: u64 },
    #[error("the caller's deadline passed while the charge was queued; no work was done")]
    DeadlinePassed,
}

/// Lognormal with the given median and 95th percentile.
#[derive(Clone, Copy, Debug)]
pub struct LogNormal {
    mu: f64,
    sigma: f64,
}

impl LogNormal {
    /// z-score of the 95th percentile of the standard normal.
    const Z95: f64 = 1.644_853_626_951_472_2;

    pub fn from_p50_p95(p50: Duration, p95: Duration) -> Self {
        let p50 = p50.as_secs_f64().max(1e-6);
        let p95 = p95.as_secs_f64().max(p50);
        Self {
            mu: p50.ln(),
            sigma: (p95.ln() - p50.ln()) / Self::Z95,
        }
    }

    pub fn sample(&self, rng: &mut SmallRng) -> Duration {
        // Box-Muller: a standard normal from two uniforms in (0, 1].
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64((self.mu + self.sigma * z).exp().min(60.0))
    }
}

pub struct Capacity {
    config: CapacityConfig,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    service_time: LogNormal,
    rng: Mutex<SmallRng>,
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Decrements the queue depth when a waiter leaves the queue, however it leaves.
struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Capacity {
    pub fn new(config: CapacityConfig) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(
                config.slots.saturating_mul(PERMITS_PER_SLOT as usize),
            )),
            waiting: AtomicUsize::new(0),
            service_time: LogNormal::from_p50_p95(config.service_p50, config.service_p95),
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            config,
        }
    }

    /// Takes a slot: at once if one is free, else after queueing (if the queue has room)
    /// until a slot frees, the queue timeout passes, or the caller's deadline passes.
    /// Under a brownout (`Some(factor)`: the share of capacity left), each charge takes
    /// `1/factor` of a slot's permits, so only `floor(slots x factor)` charges (at least one)
    /// run at once.
    pub async fn admit(
        &self,
        deadline: Option<Instant>,
        brownout: Option<f64>,
    ) -> Result<OwnedSemaphorePermit, Rejected> {
        let need = self.permits_per_charge(brownout);
        if let Ok(permit) = self.slots.clone().try_acquire_many_owned(need) {
            return Ok(permit);
        }
        let depth = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if depth >= self.config.queue {
            return Err(Rejected::QueueFull {
                slots: self.config.slots,
                waiting: depth,
            });
        }
        let started = Instant::now();
        let queue_deadline = started + self.config.queue_timeout;
        let until = deadline.map_or(queue_deadline, |d| d.min(queue_deadline));
        match tokio::time::timeout_at(until, self.slots.clone().acquire_many_owned(need)).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(Rejected::DeadlinePassed)
            }
            _ => Err(Rejected::QueueTimeout {
                waited_ms: started.elapsed().as_millis() as u64,
            }),
        }
    }

    /// Permits one charge holds: [`PERMITS_PER_SLOT`], or `ceil(PERMITS_PER_SLOT / factor)`
    /// during a brownout (at most all of them). Fractions of a slot keep the cut close to the
    /// factor: with 10 slots a factor of 0.8 leaves 8 charges at once, not the 5 that whole
    /// slots per charge (`ceil(1/0.8)` = 2) would.
    fn permits_per_charge(&self, brownout: Option<f64>) -> u32 {
        let total = self.total_permits();
        match brownout {
            Some(f) if f > 0.0 && f < 1.0 => {
                ((f64::from(PERMITS_PER_SLOT) / f).ceil() as u32).clamp(PERMITS_PER_SLOT, total)
            }
            _ => PERMITS_PER_SLOT,
        }
    }

    fn total_permits(&self) -> u32 {
        (self.config.slots as u32).saturating_mul(PERMITS_PER_SLOT)
    }

    /// One draw of the service time (zero when the median is configured as zero).
    pub fn service_time(&self) -> Duration {
        if self.config.service_p50.is_zero() {
            return Duration::ZERO;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        self.service_time.sample(&mut rng)
    }

    /// Slots held by running charges (a browned-out charge holds more than one).
    pub fn in_use(&self) -> usize {
        let total = self.total_permits() as usize;
        let held = total - self.slots.available_permits().min(total);
        held.div_ceil(PERMITS_PER_SLOT as usize)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "slots": self.config.slots,
            "slots_in_use": self.in_use(),
            "queue_limit": self.config.queue,
            "queued": self.waiting(),
            "queue_timeout_ms": self.config.queue_timeout.as_millis() as u64,
            "service_time_p50_ms": self.config.service_p50.as_millis() as u64,
            "service_time_p95_ms": self.config.service_p95.as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(slots: usize, queue: usize) -> CapacityConfig {
        CapacityConfig {
            slots,
            queue,
            queue_timeout: Duration::from_millis(100),
            ..CapacityConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn admits_slots_then_queues_then_refuses() {
        let cap = Arc::new(Capacity::new(config(2, 1)));
        let a = cap.admit(None, None).await.unwrap();
        let _b = cap.admit(None, None).await.unwrap();
        let queued = tokio::spawn({
            let cap = cap.clone();
            async move { cap.admit(None, None).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(cap.waiting(), 1);
        assert_eq!(
            cap.admit(None, None).await.unwrap_err(),
            Rejected::QueueFull {
                slots: 2,
                waiting: 1
            }
        );
        drop(a);
        queued
            .await
            .unwrap()
            .expect("the queued charge gets the freed slot");
        assert_eq!(cap.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_timeout_and_deadline_are_told_apart() {
        let cap = Capacity::new(config(1, 4));
        let _held = cap.admit(None, None).await.unwrap();
        let err = cap.admit(None, None).await.unwrap_err();
        assert_eq!(err, Rejected::QueueTimeout { waited_ms: 100 });
        let deadline = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            cap.admit(Some(deadline), None).await.unwrap_err(),
            Rejected::DeadlinePassed
        );
        assert_eq!(cap.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn brownout_cuts_concurrent_charges_to_the_remaining_share() {
        let cap = Capacity::new(config(10, 0));
        // 20 % of capacity left: each charge takes 5 slots, so 2 run at once.
        let a = cap.admit(None, Some(0.2)).await.unwrap();
        let _b = cap.admit(None, Some(0.2)).await.unwrap();
        assert!(matches!(
            cap.admit(None, Some(0.2)).await,
            Err(Rejected::QueueFull { .. })
        ));
        assert_eq!(cap.in_use(), 10);
        drop(a);
        assert!(cap.admit(None, Some(0.2)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn brownout_keeps_the_share_it_names_not_whole_slots() {
        // 10 slots at 80 %: 8 charges at once (whole slots per charge would allow 5).
        let cap = Capacity::new(config(10, 0));
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(cap.admit(None, Some(0.8)).await.expect("8 fit"));
        }
        assert!(matches!(
            cap.admit(None, Some(0.8)).await,
            Err(Rejected::QueueFull { .. })
        ));
        assert_eq!(cap.in_use(), 10, "8 charges of 1.25 slots hold all 10");
        drop(held);
        assert_eq!(cap.in_use(), 0);
    }

    #[test]
    fn lognormal_matches_its_percentiles() {
        let d = LogNormal::from_p50_p95(Duration::from_millis(20), Duration::from_millis(60));
        let mut rng = SmallRng::seed_from_u64(7);
        let mut samples: Vec<f64> = (0..20_000)
            .map(|_| d.sample(&mut rng).as_secs_f64() * 1000.0)
            .collect();
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        let p95 = samples[samples.len() * 95 / 100];
        assert!((18.0..22.0).contains(&p50), "p50 {p50}");
        assert!((54.0..66.0).contains(&p95), "p95 {p95}");
    }
}
