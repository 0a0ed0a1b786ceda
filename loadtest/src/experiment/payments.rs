//! The payments model every experiment, calibration and sweep runs against: payments'
//! capacity flags (slots, queue, queue timeout, lognormal service time), chosen so that the
//! system's knee is set by payments' slots and queue — the modelled bottleneck — and sits far
//! below what this machine's CPU can carry.
//!
//! With the defaults (10 slots, service time p50 80 ms / p95 160 ms, so a mean of about
//! 87 ms) payments completes at most about 114 charges per second. The queue holds 128
//! charges for up to 2 s: under overload a charge waits about a second, longer than the
//! 500 ms per-try timeout of the profiles that have one, so abandoned attempts keep their
//! place in the queue unless the profile propagates and enforces deadlines. That is the
//! condition in which retries can hurt; the defaults do not depend on the profile.

use serde::{Deserialize, Serialize};

/// Payments' capacity flags (`payments --help`), as the lab's runs set them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct PaymentsModel {
    /// Payments: charges processed at the same time
    #[arg(long = "payments-slots", value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub slots: u32,
    /// Payments: charges that may wait for a slot
    #[arg(long = "payments-queue", value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub queue: u32,
    /// Payments: longest wait for a slot
    #[arg(
        long = "payments-queue-timeout-ms",
        value_name = "MS",
        default_value_t = 2000
    )]
    pub queue_timeout_ms: u64,
    /// Payments: median service time of one charge (lognormal)
    #[arg(long = "payments-service-p50-ms", value_name = "MS", default_value_t = 80,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub service_p50_ms: u64,
    /// Payments: 95th percentile of the service time
    #[arg(
        long = "payments-service-p95-ms",
        value_name = "MS",
        default_value_t = 160
    )]
    pub service_p95_ms: u64,
}

impl Default for PaymentsModel {
    fn default() -> Self {
        Self {
            slots: 10,
            queue: 128,
            queue_timeout_ms: 2000,
            service_p50_ms: 80,
            service_p95_ms: 160,
        }
    }
}

/// z-score of the 95th percentile of the standard normal.
const Z95: f64 = 1.644_853_626_951_472_2;

impl PaymentsModel {
    /// Refuses a model payments would refuse, naming the flag and the value.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.service_p95_ms < self.service_p50_ms {
            anyhow::bail!(
                "--payments-service-p95-ms ({}) must be at least --payments-service-p50-ms ({})",
                self.service_p95_ms,
                self.service_p50_ms
            );
        }
        Ok(())
    }

    /// The flags payments is started with.
    pub fn args(&self) -> Vec<String> {
        [
            ("--slots", self.slots.to_string()),
            ("--queue", self.queue.to_string()),
            ("--queue-timeout-ms", self.queue_timeout_ms.to_string()),
            ("--service-time-p50-ms", self.service_p50_ms.to_string()),
            ("--service-time-p95-ms", self.service_p95_ms.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }

    /// Mean service time of the lognormal with this median and p95, in milliseconds.
    pub fn mean_service_ms(&self) -> f64 {
        let p50 = self.service_p50_ms as f64;
        let sigma = ((self.service_p95_ms as f64).max(p50) / p50).ln() / Z95;
        p50 * (sigma * sigma / 2.0).exp()
    }

    /// Charges per second payments completes with every slot busy: `slots / mean service
    /// time`. What the model promises; [`crate::experiment::calibrate`] measures the knee.
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.slots) * 1000.0 / self.mean_service_ms()
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} slots, service time p50 {} ms / p95 {} ms (mean {:.1} ms), queue {} for at most \
             {} ms: at most {:.0} charges/s",
            self.slots,
            self.service_p50_ms,
            self.service_p95_ms,
            self.mean_service_ms(),
            self.queue,
            self.queue_timeout_ms,
            self.capacity_rps()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_slots_over_the_lognormal_mean() {
        let m = PaymentsModel::default();
        // sigma = ln 2 / 1.645 = 0.4214; mean = 80 * exp(sigma^2 / 2) = 87.4 ms.
        assert!(
            (m.mean_service_ms() - 87.4).abs() < 0.1,
            "{}",
            m.mean_service_ms()
        );
        assert!(
            (m.capacity_rps() - 114.4).abs() < 0.2,
            "{}",
            m.capacity_rps()
        );
        // A fixed service time: the mean is the median.
        let fixed = PaymentsModel {
            slots: 2,
            service_p50_ms: 50,
            service_p95_ms: 50,
            ..m
        };
        assert_eq!(fixed.capacity_rps(), 40.0);
    }

    #[test]
    fn args_are_payments_own_flags_and_bad_times_are_named() {
        let m = PaymentsModel::default();
        assert_eq!(
            m.args().join(" "),
            "--slots 10 --queue 128 --queue-timeout-ms 2000 --service-time-p50-ms 80 \
             --service-time-p95-ms 160"
        );
        let bad = PaymentsModel {
            service_p95_ms: 10,
            ..m
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("--payments-service-p95-ms (10)"), "{err}");
    }
}
