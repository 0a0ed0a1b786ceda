//! The run itself against a fake gateway on a paused clock: on time, open loop, retries,
//! the in-flight cap, cancellation; the seeded items and the CPU clock.

use super::*;
use std::sync::Mutex;
use tokio::sync::Semaphore;

/// A fake gateway: each attempt waits for one of `slots`, holds it for `service`, then
/// answers with `code` (None: OK). Records every key it saw.
#[derive(Clone)]
struct Fake {
    slots: Arc<Semaphore>,
    service: Duration,
    code: Option<&'static str>,
    keys: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn new(slots: usize, service: Duration, code: Option<&'static str>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            service,
            code,
            keys: Arc::default(),
        }
    }
}

impl Target for Fake {
    async fn attempt(
        &self,
        request: PlaceOrderRequest,
        _timeout: Duration,
    ) -> Result<(), &'static str> {
        self.keys.lock().unwrap().push(request.idempotency_key);
        let _slot = self.slots.acquire().await.unwrap();
        tokio::time::sleep(self.service).await;
        self.code.map_or(Ok(()), Err)
    }
}

fn config(rate: f64, duration: Duration) -> LoadConfig {
    let mut c = LoadConfig::new("http://unused", Schedule::Constant { rate }, duration);
    c.key_prefix = "t".into();
    c
}

const MS: fn(u64) -> Duration = Duration::from_millis;

#[tokio::test(start_paused = true)]
async fn every_intended_request_is_sent_once_on_time() {
    let fake = Fake::new(1000, MS(5), None);
    let mut ticks = 0;
    let report = drive(config(50.0, MS(2000)), fake.clone(), |_| ticks += 1).await;
    assert_eq!(report.issued, 100);
    assert_eq!(
        (report.succeeded, report.failed, report.dropped),
        (100, 0, 0)
    );
    assert_eq!(report.attempts, 100);
    assert_eq!(report.by_code["OK"], 100);
    let per_second: Vec<u64> = report.timeline.iter().map(|s| s.issued).collect();
    assert_eq!(per_second, [50, 50]);
    assert_eq!(
        report.lag_ms.max, 0.001,
        "a paused clock is never late (1 µs floor)"
    );
    assert!(
        (report.latency_ms.p99 - 5.0).abs() < 0.01,
        "{:?}",
        report.latency_ms
    );
    assert!(!report.saturated);
    assert!(ticks >= 1, "progress was reported");
    let keys = fake.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 100);
    assert_eq!(keys[0], "t-0");
    assert_eq!(keys[99], "t-99");
}

#[tokio::test(start_paused = true)]
async fn latency_runs_from_the_intended_time_when_the_target_stalls() {
    // One slot, 200 ms per request, 10 requests 100 ms apart: the i-th is answered at
    // 200·(i+1) ms, so it waited 200 + 100·i ms since it was due. A closed-loop
    // generator would have reported 200 ms for all of them.
    let fake = Fake::new(1, MS(200), None);
    let mut c = config(10.0, MS(1000));
    c.deadline = Duration::from_secs(10);
    let report = drive(c, fake, |_| {}).await;
    assert_eq!(report.succeeded, 10);
    assert!(
        (report.latency_ms.max - 1100.0).abs() < 2.0,
        "{:?}",
        report.latency_ms
    );
    assert!(
        (report.latency_ms.p50 - 600.0).abs() < 2.0,
        "{:?}",
        report.latency_ms
    );
    assert!(report.lag_ms.p99 < 1.0, "the scheduler kept its times");
    assert!((report.elapsed_s - 2.0).abs() < 0.01);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_the_same_key() {
    let fake = Fake::new(1000, MS(1), Some("UNAVAILABLE"));
    let mut c = config(10.0, MS(1000));
    c.client_retries = 2;
    let report = drive(c, fake.clone(), |_| {}).await;
    assert_eq!((report.issued, report.failed), (10, 10));
    assert_eq!(report.attempts, 30);
    assert_eq!(report.by_code["UNAVAILABLE"], 10);
    assert_eq!(report.latency_ms.count, 0);
    assert_eq!(report.all_latency_ms.count, 10);
    let keys = fake.keys.lock().unwrap().clone();
    assert_eq!(keys.iter().filter(|k| *k == "t-3").count(), 3);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_deadline() {
    // Each failure takes 300 ms; with a 500 ms deadline the second attempt is cut off.
    let fake = Fake::new(1000, MS(300), Some("UNAVAILABLE"));
    let mut c = config(1.0, MS(1000));
    c.client_retries = 5;
    c.deadline = MS(500);
    let report = drive(c, fake, |_| {}).await;
    assert_eq!(report.attempts, 2);
    assert_eq!(report.by_code["DEADLINE_EXCEEDED"], 1);
    assert!((report.all_latency_ms.max - 500.0).abs() < 1.0);
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_in_flight_cap_are_dropped_not_delayed() {
    let fake = Fake::new(1000, MS(1000), None);
    let mut c = config(10.0, MS(1000));
    c.max_in_flight = 4;
    c.deadline = MS(5000);
    let report = drive(c, fake, |_| {}).await;
    assert_eq!(report.issued, 10);
    assert_eq!((report.succeeded, report.dropped), (4, 6));
    assert_eq!(report.max_in_flight_seen, 4);
    assert!(report.saturated);
    assert_eq!(report.timeline[0].dropped, 6);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_stops_issuing() {
    let fake = Fake::new(1000, MS(1), None);
    let run = drive(config(10.0, MS(2000)), fake.clone(), |_| {});
    assert!(tokio::time::timeout(MS(450), run).await.is_err());
    tokio::time::sleep(MS(3000)).await;
    assert_eq!(
        fake.keys.lock().unwrap().len(),
        5,
        "those due before 450 ms"
    );
}

#[test]
fn random_items_depend_on_the_seed_only() {
    let draw = |seed| {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..50).map(|_| random_items(&mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    for items in draw(3) {
        assert!((1..=3).contains(&items.len()));
        for item in items {
            assert!((1..=3).contains(&item.quantity));
            let n: u32 = item.product_id["sku-".len()..].parse().unwrap();
            assert!((1..=PRODUCTS).contains(&n));
        }
    }
}

#[test]
fn bad_configs_name_the_value() {
    let mut c = config(10.0, MS(1000));
    c.key_prefix = "has space".into();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("`has space`")
    );
    let mut c = config(10.0, MS(1000));
    c.schedule = Schedule::parse("spike:1-5@2s+1s").unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("2 s") && err.contains("duration 1 s"), "{err}");
    let c = config(100_000.0, Duration::from_secs(3600));
    assert!(c.validate().unwrap_err().to_string().contains("limit"));
}

#[test]
fn cpu_time_grows() {
    let before = cpu_time();
    let mut x = 0u64;
    for i in 0..20_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    assert!(cpu_time() > before);
}
