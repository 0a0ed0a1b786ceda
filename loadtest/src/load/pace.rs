//! Open-loop pacing: when each request of a [`Schedule`] is due, waited for without ever
//! waiting for an answer. A request already late when its turn comes is due at once (its
//! lag says by how much), never skipped, so the number sent is what the schedule asks.
//! The load generator and the console's bursts and steady load pace their orders here.

use std::time::Duration;

use tokio::time::Instant;

use super::Schedule;

/// One request that is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Due {
    /// Its number, from 0.
    pub index: u64,
    /// Its intended send time, from the start.
    pub offset: Duration,
    pub intended: Instant,
    /// How late [`Pacer::next`] returned it after its intended time.
    pub lag: Duration,
}

/// The requests of a schedule, each returned when it is due.
#[derive(Debug, Clone)]
pub struct Pacer {
    schedule: Schedule,
    total: Duration,
    start: Instant,
    count: u64,
    next: u64,
}

impl Pacer {
    /// The schedule over `total` from `start`; `None`: it never ends (a constant rate).
    pub fn new(schedule: Schedule, total: Option<Duration>, start: Instant) -> Self {
        let total = total.unwrap_or(Duration::MAX);
        Self {
            count: schedule.request_count(total),
            schedule,
            total,
            start,
            next: 0,
        }
    }

    /// Waits until the next request is due; `None` once the schedule is done.
    pub async fn next(&mut self) -> Option<Due> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        let offset = self.schedule.intended_offset(index, self.total)?;
        self.next += 1;
        let intended = self.start + offset;
        // Already late: go straight on, the lag says by how much.
        if Instant::now() < intended {
            tokio::time::sleep_until(intended).await;
        }
        let lag = Instant::now().saturating_duration_since(intended);
        Some(Due {
            index,
            offset,
            intended,
            lag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_come_due_on_schedule_and_late_ones_at_once() {
        let start = Instant::now();
        let mut pacer = Pacer::new(
            Schedule::Constant { rate: 10.0 },
            Some(Duration::from_millis(300)),
            start,
        );
        let first = pacer.next().await.unwrap();
        assert_eq!(
            (first.index, first.offset, first.lag),
            (0, Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The caller stalls past the next two intended times: both come at once, late.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let second = pacer.next().await.unwrap();
        let third = pacer.next().await.unwrap();
        assert_eq!((second.index, third.index), (1, 2));
        assert_eq!(second.lag, Duration::from_millis(150));
        assert_eq!(third.lag, Duration::from_millis(50));
        assert_eq!(pacer.next().await, None, "3 requests in 300 ms at 10/s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_pacer_keeps_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Schedule::Constant { rate: 4.0 }, None, start);
        for _ in 0..9 {
            pacer.next().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
