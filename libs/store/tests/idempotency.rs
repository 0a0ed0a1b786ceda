//! `IdempotencyStore` semantics, the same checks for the memory and the Redis backend.
//!
//! Memory tests that involve expiry run on a paused clock; Redis expiry is real time, so
//! those use short leases. Every Redis test uses its own uuid namespace.

use std::time::Duration;

use lab_store::testing::redis_test_url;
use lab_store::{Claim, IdempotencyStore, StoreError};

const LEASE: Duration = Duration::from_secs(30);
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
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::InFlight);
    assert_eq!(s.claim("other", LEASE).await.unwrap(), Claim::Acquired);
    // Binary-safe: zero bytes, a leading 0/1 and invalid UTF-8 all survive.
    let response = [0u8, 1, 0, 255, 254, b'o', b'k'];
    s.complete("k", &response, DAY).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            s.claim("k", LEASE).await.unwrap(),
            Claim::Completed(response.to_vec())
        );
    }
    // An empty response replays as empty.
    s.complete("other", b"", DAY).await.unwrap();
    assert_eq!(
        s.claim("other", LEASE).await.unwrap(),
        Claim::Completed(vec![])
    );
}

async fn abandon_allows_reacquire_but_keeps_completed(s: &IdempotencyStore) {
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    s.abandon("k").await.unwrap();
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::InFlight);
    // Abandoning a key nobody holds is harmless.
    s.abandon("never-claimed").await.unwrap();
    // A late abandon (say, an attempt whose lease had expired) keeps a completed response.
    s.complete("k", b"done", DAY).await.unwrap();
    s.abandon("k").await.unwrap();
    assert_eq!(
        s.claim("k", LEASE).await.unwrap(),
        Claim::Completed(b"done".to_vec())
    );
}

async fn concurrent_claims_acquire_once(s: &IdempotencyStore) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.claim("hot", LEASE).await.unwrap() })
        })
        .collect();
    let claims = futures::future::join_all(tasks).await;
    let acquired = claims
        .iter()
        .filter(|c| *c.as_ref().unwrap() == Claim::Acquired)
        .count();
    let in_flight = claims
        .iter()
        .filter(|c| *c.as_ref().unwrap() == Claim::InFlight)
        .count();
    assert_eq!((acquired, in_flight), (1, 49));
}

async fn claim_or_wait_returns_the_holders_response(s: &IdempotencyStore) {
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            s.claim_or_wait(
                "k",
                LEASE,
                Duration::from_secs(10),
                Duration::from_millis(10),
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter returned while the key was in flight"
    );
    s.complete("k", b"resp", DAY).await.unwrap();
    assert_eq!(waiter.await.unwrap(), Claim::Completed(b"resp".to_vec()));
    // A free key is acquired at once.
    let now = tokio::time::Instant::now();
    let claim = s
        .claim_or_wait(
            "free",
            LEASE,
            Duration::from_secs(10),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(claim.unwrap(), Claim::Acquired);
    assert!(now.elapsed() < Duration::from_secs(1));
}

async fn claim_or_wait_gives_up_after_wait(s: &IdempotencyStore) {
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    let start = tokio::time::Instant::now();
    let wait = Duration::from_millis(300);
    let claim = s
        .claim_or_wait("k", LEASE, wait, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(claim, Claim::InFlight);
    let waited = start.elapsed();
    assert!(
        waited >= wait && waited < wait + Duration::from_secs(2),
        "{waited:?}"
    );
}

/// `lease` is short; `pause` (sleep or clock advance) must outlast it.
async fn lease_expiry_allows_takeover(s: &IdempotencyStore, lease: Duration, pause: Duration) {
    assert_eq!(s.claim("k", lease).await.unwrap(), Claim::Acquired);
    assert_eq!(s.claim("k", lease).await.unwrap(), Claim::InFlight);
    tokio::time::sleep(pause).await;
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::InFlight);

    // A waiter takes over when the holder's lease runs out mid-wait.
    assert_eq!(s.claim("w", lease).await.unwrap(), Claim::Acquired);
    let claim = s
        .claim_or_wait("w", LEASE, pause * 4, Duration::from_millis(20))
        .await;
    assert_eq!(claim.unwrap(), Claim::Acquired);
}

async fn completed_responses_expire_after_ttl(
    s: &IdempotencyStore,
    ttl: Duration,
    pause: Duration,
) {
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    s.complete("k", b"r", ttl).await.unwrap();
    assert_eq!(
        s.claim("k", LEASE).await.unwrap(),
        Claim::Completed(b"r".to_vec())
    );
    tokio::time::sleep(pause).await;
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
}

async fn namespaces_isolate(a: &IdempotencyStore, b: &IdempotencyStore) {
    assert_eq!(a.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(b.claim("k", LEASE).await.unwrap(), Claim::Acquired);
    a.complete("k", b"from a", DAY).await.unwrap();
    assert_eq!(b.claim("k", LEASE).await.unwrap(), Claim::InFlight);
    b.abandon("k").await.unwrap();
    assert_eq!(
        a.claim("k", LEASE).await.unwrap(),
        Claim::Completed(b"from a".to_vec())
    );
    assert_eq!(b.claim("k", LEASE).await.unwrap(), Claim::Acquired);
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

#[tokio::test(start_paused = true)]
async fn memory_claim_or_wait_returns_the_holders_response() {
    claim_or_wait_returns_the_holders_response(&memory()).await;
}

#[tokio::test(start_paused = true)]
async fn memory_claim_or_wait_gives_up_after_wait() {
    claim_or_wait_gives_up_after_wait(&memory()).await;
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
        s.claim("k", Duration::from_secs(5)).await.unwrap(),
        Claim::Acquired
    );
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::InFlight);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(s.claim("k", LEASE).await.unwrap(), Claim::Acquired);
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
        s.claim(&format!("k{i}"), Duration::from_secs(1))
            .await
            .unwrap();
    }
    assert_eq!(m.len(), 3000);
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..3000 {
        s.claim("live", LEASE).await.unwrap();
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
            store.claim("hot", LEASE).await.unwrap()
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
async fn redis_claim_or_wait_returns_the_holders_response() {
    claim_or_wait_returns_the_holders_response(&redis("wait").await).await;
}

#[tokio::test]
async fn redis_claim_or_wait_gives_up_after_wait() {
    claim_or_wait_gives_up_after_wait(&redis("giveup").await).await;
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
