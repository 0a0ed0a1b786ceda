//! Wall-clock time, read through a trait so that tests fix it.
//!
//! Fault windows are wall-clock times (they are written into `.status` and compared across
//! controller restarts), so they come from [`Clock::now`], never from `tokio::time`.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Where the controller reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(now: Timestamp) -> Self {
        Self(Mutex::new(now))
    }

    pub fn set(&self, now: Timestamp) {
        *self.0.lock().expect("clock lock") = now;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}

/// `t` cut to whole milliseconds: the precision of `.status` and of the admin API.
pub fn to_millis(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap_or(t)
}

/// How long from `now` until `until`; zero if `until` has passed.
pub fn remaining(now: Timestamp, until: Timestamp) -> Duration {
    let left: SignedDuration = until.duration_since(now);
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}
