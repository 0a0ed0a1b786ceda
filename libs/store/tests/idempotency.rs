//! `IdempotencyStore` and the `Idempotency` protocol on top of it, the same checks for the
//! memory and the Redis backend.
//!
//! Memory tests that involve expiry run on a paused clock; Redis expiry is real time, so
//! those use short leases. Every Redis test uses its own uuid namespace.

use std::time::Duration;

use lab_store::testing::redis_test_url;
use lab_store::{
    Begin, Claim, Claimed, Fingerprint, Idempotency, IdempotencyError, IdempotencyStore, StoreError,
};

const LEASE: Duration = Duration::from_secs(30);
/// The holder bytes of the raw-store tests.
const H: &[u8] = b"holder";
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn redis(namespace: &str) -> IdempotencyStore {
    let ns = format!("frlab-test-{namespace}-{}", uuid::Uuid::new_v4().simple());
    let store = IdempotencyStore::connect(Some(&redis_test_url()), &ns)
        .await
        .unwrap();
    assert_eq!(store.backend_name(), "redis");
    store
}

fn memory() -> IdempotencyStore {
    let store = IdempotencyStore::memory();
    assert_eq!(store.backend_name(), "memory");
    store
}

// ---- bodies shared by both backends ----

async fn acquire_in_flight_complete_replay(s: &IdempotencyStore) {
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(
        s.claim("k", H, LEASE).await.unwrap(),
        Claim::InFlight(H.to_vec())
    );
    assert_eq!(s.claim("other", H, LEASE).await.unwrap(), Claim::Acquired);
    // Binary-safe: zero bytes, a leading 0/1 and invalid UTF-8 all survive.
    let response = [0u8, 1, 0, 255, 254, b'o', b'k'];
    s.complete("k", &response, DAY).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            s.claim("k", H, LEASE).await.unwrap(),
            Claim::Completed(response.to_vec())
        );
    }
    // An empty response replays as empty.
    s.complete("other", b"", DAY).await.unwrap();
    assert_eq!(
        s.claim("other", H, LEASE).await.unwrap(),
        Claim::Completed(vec![])
    );
}

async fn abandon_allows_reacquire_but_keeps_completed(s: &IdempotencyStore) {
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    s.abandon("k", H).await.unwrap();
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(
        s.claim("k", H, LEASE).await.unwrap(),
        Claim::InFlight(H.to_vec())
    );
    // Abandoning a key nobody holds is harmless.
    s.abandon("never-claimed", H).await.unwrap();
    // A late abandon (say, an attempt whose lease had expired) keeps a completed response.
    s.complete("k", b"done", DAY).await.unwrap();
    s.abandon("k", H).await.unwrap();
    assert_eq!(
        s.claim("k", H, LEASE).await.unwrap(),
        Claim::Completed(b"done".to_vec())
    );
}

async fn concurrent_claims_acquire_once(s: &IdempotencyStore) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.claim("hot", H, LEASE).await.unwrap() })
        })
        .collect();
    let claims = futures::future::join_all(tasks).await;
    let acquired = claims
        .iter()
        .filter(|c| *c.as_ref().unwrap() == Claim::Acquired)
        .count();
    let in_flight = claims
        .iter()
        .filter(|c| *c.as_ref().unwrap() == Claim::InFlight(H.to_vec()))
        .count();
    assert_eq!((acquired, in_flight), (1, 49));
}

async fn abandon_drops_only_its_own_claim(s: &IdempotencyStore) {
    assert_eq!(
        s.claim("k", b"first", LEASE).await.unwrap(),
        Claim::Acquired
    );
    // Another holder's abandon (its lease had run out and this claim took over) is a no-op.
    s.abandon("k", b"second").await.unwrap();
    assert_eq!(
        s.claim("k", b"second", LEASE).await.unwrap(),
        Claim::InFlight(b"first".to_vec())
    );
    s.abandon("k", b"first").await.unwrap();
    assert_eq!(
        s.claim("k", b"second", LEASE).await.unwrap(),
        Claim::Acquired
    );
}

// ---- the protocol (Idempotency) over both backends ----

fn order(customer: &str) -> Fingerprint {
    Fingerprint::new()
        .with("customer_id", customer)
        .with("items", "sku-1x1")
}

async fn run(p: &Idempotency, key: &str, fp: &Fingerprint) -> Claimed {
    match p.begin(key, fp, None).await.unwrap() {
        Begin::Run(claimed) => claimed,
        other => panic!("expected to run, got {other:?}"),
    }
}

async fn protocol_runs_once_replays_and_refuses_other_parameters(p: &Idempotency) {
    let claimed = run(p, "k", &order("c1")).await;
    assert_eq!(claimed.key(), "k");
    // While in flight, other parameters are refused at once, naming what differs.
    let err = p.begin("k", &order("c2"), None).await.unwrap_err();
    assert!(matches!(err, IdempotencyError::Mismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "idempotency_key: \"k\" was first used with customer_id \"c1\" (this request: \"c2\")"
    );
    p.complete("k", &order("c1"), b"order-1").await.unwrap();
    match p.begin("k", &order("c1"), None).await.unwrap() {
        Begin::Replay(bytes) => assert_eq!(bytes, b"order-1"),
        other => panic!("expected a replay, got {other:?}"),
    }
    let err = p.begin("k", &order("c2"), None).await.unwrap_err();
    assert!(matches!(err, IdempotencyError::Mismatch { .. }), "{err:?}");
    // An abandoned claim lets the next attempt run.
    let claimed = run(p, "a", &order("c1")).await;
    p.abandon(claimed).await.unwrap();
    let _claimed = run(p, "a", &order("c1")).await;
}

/// A duplicate waits for the holder and gets its answer; `complete` may come from another
/// `Idempotency` over the same store (another replica: then the waiter notices by polling).
/// It must get the answer within `latency` of the completion.
async fn protocol_duplicates_wait_for_the_holder(
    holder: &Idempotency,
    waiter: &Idempotency,
    latency: Duration,
) {
    let _claimed = run(holder, "k", &order("c1")).await;
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.begin("k", &order("c1"), None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the duplicate returned while the key was in flight"
    );
    holder.complete("k", &order("c1"), b"answer").await.unwrap();
    let started = tokio::time::Instant::now();
    match waiting.await.unwrap().unwrap() {
        Begin::Replay(bytes) => assert_eq!(bytes, b"answer"),
        other => panic!("expected the holder's answer, got {other:?}"),
    }
    assert!(started.elapsed() <= latency, "{:?}", started.elapsed());
}

async fn protocol_gives_up_at_the_deadline(p: &Idempotency) {
    let _claimed = run(p, "k", &order("c1")).await;
    let start = tokio::time::Instant::now();
    let wait = Duration::from_millis(300);
    let err = p
        .begin("k", &order("c1"), Some(start + wait))
        .await
        .unwrap_err();
    assert!(matches!(err, IdempotencyError::InFlight { .. }), "{err:?}");
    assert!(err.to_string().contains("still in flight"), "{err}");
    let waited = start.elapsed();
    assert!(
        waited >= wait && waited < wait + Duration::from_secs(2),
        "{waited:?}"
    );
}

/// The holder died (never completes): a waiter takes the key over when its lease ends.
async fn protocol_takes_over_an_expired_lease(p: &Idempotency) {
    let _abandoned_by_a_crash = run(p, "k", &order("c1")).await;
    let claim = p.begin("k", &order("c1"), None).await.unwrap();
    assert!(matches!(claim, Begin::Run(_)), "{claim:?}");
}

/// `lease` is short; `pause` (sleep or clock advance) must outlast it.
async fn lease_expiry_allows_takeover(s: &IdempotencyStore, lease: Duration, pause: Duration) {
    assert_eq!(s.claim("k", H, lease).await.unwrap(), Claim::Acquired);
    assert_eq!(
        s.claim("k", H, lease).await.unwrap(),
        Claim::InFlight(H.to_vec())
    );
    tokio::time::sleep(pause).await;
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(
        s.claim("k", H, LEASE).await.unwrap(),
        Claim::InFlight(H.to_vec())
    );
}

async fn completed_responses_expire_after_ttl(
    s: &IdempotencyStore,
    ttl: Duration,
    pause: Duration,
) {
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    s.complete("k", b"r", ttl).await.unwrap();
    assert_eq!(
        s.claim("k", H, LEASE).await.unwrap(),
        Claim::Completed(b"r".to_vec())
    );
    tokio::time::sleep(pause).await;
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
}

async fn namespaces_isolate(a: &IdempotencyStore, b: &IdempotencyStore) {
    assert_eq!(a.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(b.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
    a.complete("k", b"from a", DAY).await.unwrap();
    assert_eq!(
        b.claim("k", H, LEASE).await.unwrap(),
        Claim::InFlight(H.to_vec())
    );
    b.abandon("k", H).await.unwrap();
    assert_eq!(
        a.claim("k", H, LEASE).await.unwrap(),
        Claim::Completed(b"from a".to_vec())
    );
    assert_eq!(b.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
}

// ---- memory ----

#[tokio::test]
async fn memory_acquire_in_flight_complete_replay() {
    acquire_in_flight_complete_replay(&memory()).await;
}

#[tokio::test]
async fn memory_abandon_allows_reacquire() {
    abandon_allows_reacquire_but_keeps_completed(&memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_claims_acquire_once() {
    for _ in 0..20 {
        concurrent_claims_acquire_once(&memory()).await;
    }
}

#[tokio::test]
async fn memory_abandon_drops_only_its_own_claim() {
    abandon_drops_only_its_own_claim(&memory()).await;
}

fn day(store: IdempotencyStore) -> Idempotency {
    Idempotency::new(store, DAY)
}

#[tokio::test]
async fn memory_protocol_runs_once_replays_and_refuses_other_parameters() {
    protocol_runs_once_replays_and_refuses_other_parameters(&day(memory())).await;
}

#[tokio::test(start_paused = true)]
async fn memory_protocol_duplicates_wait_for_the_holder() {
    let p = day(memory());
    // On the paused clock, any poll would advance time: the completion wakes it at once.
    protocol_duplicates_wait_for_the_holder(&p, &p, Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn memory_protocol_gives_up_at_the_deadline() {
    protocol_gives_up_at_the_deadline(&day(memory())).await;
}

#[tokio::test(start_paused = true)]
async fn memory_protocol_takes_over_an_expired_lease() {
    let p = day(memory()).with_timing(Duration::from_secs(5), Duration::from_secs(20));
    protocol_takes_over_an_expired_lease(&p).await;
}

/// 200 duplicates at once: one runs, every other one replays its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_protocol_two_hundred_duplicates_run_once() {
    let p = day(memory());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                match p.begin("hot", &order("c1"), None).await.unwrap() {
                    Begin::Run(_claimed) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        p.complete("hot", &order("c1"), b"once").await.unwrap();
                        true
                    }
                    Begin::Replay(bytes) => {
                        assert_eq!(bytes, b"once");
                        false
                    }
                }
            })
        })
        .collect();
    let ran = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(ran, 1);
}

#[tokio::test(start_paused = true)]
async fn memory_lease_expiry_allows_takeover() {
    let s = memory();
    lease_expiry_allows_takeover(&s, Duration::from_secs(5), Duration::from_secs(6)).await;
}

#[tokio::test(start_paused = true)]
async fn memory_lease_is_alive_until_it_expires() {
    let s = memory();
    assert_eq!(
        s.claim("k", H, Duration::from_secs(5)).await.unwrap(),
        Claim::Acquired
    );
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert_eq!(
        s.claim("k", H, LEASE).await.unwrap(),
        Claim::InFlight(H.to_vec())
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(s.claim("k", H, LEASE).await.unwrap(), Claim::Acquired);
}

#[tokio::test(start_paused = true)]
async fn memory_completed_responses_expire_after_ttl() {
    let s = memory();
    completed_responses_expire_after_ttl(&s, DAY, DAY + Duration::from_secs(1)).await;
}

#[tokio::test]
async fn memory_namespaces_isolate() {
    let a = IdempotencyStore::connect(None, "orders").await.unwrap();
    let b = IdempotencyStore::connect(None, "payments").await.unwrap();
    namespaces_isolate(&a, &b).await;
}

#[tokio::test(start_paused = true)]
async fn memory_sweeps_expired_entries() {
    let IdempotencyStore::Memory(m) = memory() else {
        unreachable!()
    };
    let s = IdempotencyStore::Memory(m.clone());
    for i in 0..3000 {
        s.claim(&format!("k{i}"), H, Duration::from_secs(1))
            .await
            .unwrap();
    }
    assert_eq!(m.len(), 3000);
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..3000 {
        s.claim("live", H, LEASE).await.unwrap();
    }
    assert_eq!(m.len(), 1, "expired entries were not swept");
}

// ---- Redis ----

#[tokio::test]
async fn redis_acquire_in_flight_complete_replay() {
    acquire_in_flight_complete_replay(&redis("replay").await).await;
}

#[tokio::test]
async fn redis_abandon_allows_reacquire() {
    abandon_allows_reacquire_but_keeps_completed(&redis("abandon").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_concurrent_claims_acquire_once() {
    for i in 0..5 {
        concurrent_claims_acquire_once(&redis(&format!("race{i}")).await).await;
    }
    // Across separate connections too, as with several replicas of a service.
    let ns = format!("frlab-test-replicas-{}", uuid::Uuid::new_v4().simple());
    let url = redis_test_url();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = IdempotencyStore::connect(Some(&url), &ns).await.unwrap();
        tasks.push(tokio::spawn(async move {
            store.claim("hot", H, LEASE).await.unwrap()
        }));
    }
    let claims = futures::future::join_all(tasks).await;
    let acquired = claims
        .iter()
        .filter(|c| *c.as_ref().unwrap() == Claim::Acquired)
        .count();
    assert_eq!(acquired, 1);
}

#[tokio::test]
async fn redis_abandon_drops_only_its_own_claim() {
    abandon_drops_only_its_own_claim(&redis("own").await).await;
}

#[tokio::test]
async fn redis_protocol_runs_once_replays_and_refuses_other_parameters() {
    protocol_runs_once_replays_and_refuses_other_parameters(&day(redis("proto").await)).await;
}

#[tokio::test]
async fn redis_protocol_duplicates_wait_for_the_holder() {
    let p = day(redis("wait").await);
    protocol_duplicates_wait_for_the_holder(&p, &p, Duration::from_millis(100)).await;
}

/// Holder and waiter on separate connections (two replicas): the waiter polls.
#[tokio::test]
async fn redis_protocol_duplicates_wait_for_a_holder_elsewhere() {
    let ns = format!("frlab-test-replica-{}", uuid::Uuid::new_v4().simple());
    let url = redis_test_url();
    let a = day(IdempotencyStore::connect(Some(&url), &ns).await.unwrap());
    let b = day(IdempotencyStore::connect(Some(&url), &ns).await.unwrap());
    // Polled, at most 200 ms apart.
    protocol_duplicates_wait_for_the_holder(&a, &b, Duration::from_millis(400)).await;
}

#[tokio::test]
async fn redis_protocol_gives_up_at_the_deadline() {
    protocol_gives_up_at_the_deadline(&day(redis("giveup").await)).await;
}

#[tokio::test]
async fn redis_protocol_takes_over_an_expired_lease() {
    let p =
        day(redis("expire").await).with_timing(Duration::from_millis(200), Duration::from_secs(5));
    protocol_takes_over_an_expired_lease(&p).await;
}

#[tokio::test]
async fn redis_lease_expiry_allows_takeover() {
    let s = redis("lease").await;
    lease_expiry_allows_takeover(&s, Duration::from_millis(200), Duration::from_millis(400)).await;
}

#[tokio::test]
async fn redis_completed_responses_expire_after_ttl() {
    let s = redis("ttl").await;
    completed_responses_expire_after_ttl(
        &s,
        Duration::from_millis(200),
        Duration::from_millis(400),
    )
    .await;
}

#[tokio::test]
async fn redis_namespaces_isolate() {
    let url = redis_test_url();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let a = IdempotencyStore::connect(Some(&url), &format!("frlab-test-{id}-orders"))
        .await
        .unwrap();
    let b = IdempotencyStore::connect(Some(&url), &format!("frlab-test-{id}-payments"))
        .await
        .unwrap();
    namespaces_isolate(&a, &b).await;
}

#[tokio::test]
async fn redis_unreachable_is_an_error_naming_the_url_without_password() {
    let start = std::time::Instant::now();
    let err = IdempotencyStore::connect(Some("redis://:hunter2@127.0.0.1:1/0"), "x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RedisConnect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("redis://:***@127.0.0.1:1/0"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(10));

    let err = IdempotencyStore::connect(Some("not a url"), "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`not a url`"), "{err}");
}
