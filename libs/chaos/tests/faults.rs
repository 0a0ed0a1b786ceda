//! The live fault set: start and expiry on a paused clock, the hooks services call, seeded
//! latency draws, and `chaos_injected_total`.

use std::time::Duration;

use lab_chaos::FaultSet;
use lab_chaos::spec::{Action, FaultInjectionSpec, parse_documents};
use prometheus_client::registry::Registry;
use tokio::time::{Instant, advance};

fn spec(service: &str, rest: &str) -> FaultInjectionSpec {
    let yaml = format!(
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata:\n  name: t\nspec:\n  selector: {{ service: {service} }}\n{rest}"
    );
    parse_documents(&yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
        .spec
}

fn set(service: &str) -> (FaultSet, Registry) {
    let mut registry =
        Registry::with_labels([("service".into(), service.to_string().into())].into_iter());
    (FaultSet::new(service, &mut registry), registry)
}

const CHARGE: &str = "/shop.v1.Payments/Charge";
const RESERVE: &str = "/shop.v1.Inventory/Reserve";

fn outage(duration: &str) -> FaultInjectionSpec {
    spec(
        "payments",
        &format!("  action: outage\n  duration: {duration}\n"),
    )
}

#[tokio::test(start_paused = true)]
async fn faults_act_only_from_start_until_expiry() {
    let (faults, _r) = set("payments");
    let start = Instant::now() + Duration::from_secs(1);
    let expires = faults.apply("o", &outage("2s"), start, 0).unwrap();
    assert_eq!(expires, start + Duration::from_secs(2));

    assert!(
        faults.decide(CHARGE, true).is_none(),
        "acts before its start"
    );
    let listed = faults.list();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].started);

    advance(Duration::from_secs(1)).await;
    assert!(
        faults.decide(CHARGE, true).fail.is_some(),
        "not acting at its start"
    );
    assert!(faults.list()[0].started);

    advance(Duration::from_millis(1999)).await;
    assert!(faults.decide(CHARGE, true).fail.is_some(), "ended early");

    advance(Duration::from_millis(1)).await;
    assert!(
        faults.decide(CHARGE, true).is_none(),
        "still acting after expiry"
    );
    assert!(faults.list().is_empty(), "expired fault still listed");
    assert!(faults.is_empty());
    assert_eq!(faults.snapshot(), serde_json::json!([]));
}

#[tokio::test(start_paused = true)]
async fn apply_refuses_other_services_invalid_specs_and_ended_faults() {
    let (faults, _r) = set("inventory");
    let err = faults
        .apply("o", &outage("10s"), Instant::now(), 0)
        .unwrap_err();
    assert_eq!(err.field(), Some("spec.selector.service"));
    assert!(err.to_string().contains("this is inventory"), "{err}");

    let mut bad = spec("inventory", "  action: outage\n  duration: 10s\n");
    bad.duration = "-5s".into();
    assert_eq!(
        faults
            .apply("o", &bad, Instant::now(), 0)
            .unwrap_err()
            .field(),
        Some("spec.duration")
    );
    assert_eq!(
        faults
            .apply(
                "bad name",
                &spec("inventory", "  action: outage\n  duration: 10s\n"),
                Instant::now(),
                0
            )
            .unwrap_err()
            .field(),
        Some("name")
    );

    advance(Duration::from_secs(30)).await;
    let long_ago = Instant::now() - Duration::from_secs(20);
    let ok = spec("inventory", "  action: outage\n  duration: 10s\n");
    assert_eq!(
        faults.apply("o", &ok, long_ago, 0).unwrap_err().field(),
        Some("start_at_ms")
    );
    assert!(faults.list().is_empty(), "a refused fault was applied");
}

#[tokio::test(start_paused = true)]
async fn same_name_replaces_and_clear_removes() {
    let (faults, _r) = set("payments");
    let now = Instant::now();
    faults.apply("a", &outage("10s"), now, 0).unwrap();
    faults.apply("b", &outage("10s"), now, 0).unwrap();
    let expires = faults.apply("a", &outage("20s"), now, 0).unwrap();
    let listed = faults.list();
    assert_eq!(listed.len(), 2);
    let a = listed.iter().find(|v| v.name == "a").unwrap();
    assert_eq!(a.expires_at, expires);
    assert_eq!(a.expires_at_ms - a.start_at_ms, 20_000);

    assert_eq!(faults.clear(Some("nope")), 0);
    assert_eq!(faults.clear(Some("a")), 1);
    assert_eq!(faults.list().len(), 1);
    faults.apply("c", &outage("10s"), now, 0).unwrap();
    assert_eq!(faults.clear(None), 2);
    assert!(faults.decide(CHARGE, true).is_none());
}

#[tokio::test(start_paused = true)]
async fn wall_clock_conversion_round_trips() {
    let (faults, _r) = set("payments");
    let now = Instant::now();
    let ms = faults.epoch_ms(now);
    assert!(ms > 1_600_000_000_000, "not epoch ms: {ms}");
    assert_eq!(
        faults.instant_at(ms + 1500),
        now + Duration::from_millis(1500)
    );
    advance(Duration::from_secs(3)).await;
    assert_eq!(faults.epoch_ms(Instant::now()), ms + 3000);
    assert_eq!(faults.instant_at(ms), now);
}

#[tokio::test(start_paused = true)]
async fn brownout_factor_only_while_active_and_only_on_payments() {
    let (payments, _r) = set("payments");
    let brownout = spec(
        "payments",
        "  action: brownout\n  brownout: { capacityFactor: 0.2 }\n  duration: 5s\n",
    );
    assert_eq!(payments.brownout_factor(), None);
    payments
        .apply("b", &brownout, Instant::now() + Duration::from_secs(1), 0)
        .unwrap();
    assert_eq!(payments.brownout_factor(), None, "before its start");
    advance(Duration::from_secs(1)).await;
    assert_eq!(payments.brownout_factor(), Some(0.2));
    // The layer leaves brownouts to the service.
    assert!(payments.decide(CHARGE, true).is_none());
    advance(Duration::from_secs(5)).await;
    assert_eq!(payments.brownout_factor(), None, "after expiry");
    assert_eq!(payments.injected(Action::Brownout), 1);

    // No other service can take one: validation and the service check refuse it.
    let (inventory, _r) = set("inventory");
    assert!(inventory.apply("b", &brownout, Instant::now(), 0).is_err());
    assert_eq!(inventory.brownout_factor(), None);
}

#[tokio::test(start_paused = true)]
async fn lock_hold_only_while_active_for_matching_methods_with_its_probability() {
    let (inventory, _r) = set("inventory");
    let hold = spec(
        "inventory",
        "  action: lock-hold\n  lockHold: { holdMs: 2000 }\n  methods: [/shop.v1.Inventory/Reserve]\n  duration: 10s\n",
    );
    assert_eq!(inventory.lock_hold(RESERVE), None);
    inventory.apply("h", &hold, Instant::now(), 0).unwrap();
    assert_eq!(inventory.lock_hold(RESERVE), Some(Duration::from_secs(2)));
    assert_eq!(inventory.lock_hold("/shop.v1.Inventory/Release"), None);
    assert!(
        inventory.decide(RESERVE, true).is_none(),
        "the layer must not act on it"
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(inventory.lock_hold(RESERVE), None);

    // probability 0.5 over 1000 reservations: about half hold, within 4 sigma (~63).
    let half = spec(
        "inventory",
        "  action: lock-hold\n  lockHold: { holdMs: 100, probability: 0.5 }\n  duration: 10s\n",
    );
    inventory.apply("h", &half, Instant::now(), 3).unwrap();
    let held = (0..1000)
        .filter(|_| inventory.lock_hold(RESERVE).is_some())
        .count();
    assert!((437..=563).contains(&held), "{held} of 1000 held");
    assert_eq!(inventory.injected(Action::LockHold), 1 + held as u64);

    let (payments, _r) = set("payments");
    assert!(payments.apply("h", &half, Instant::now(), 0).is_err());
    assert_eq!(payments.lock_hold(RESERVE), None);
}

fn draws(faults: &FaultSet, n: usize) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| faults.extra_latency(CHARGE).expect("a latency draw"))
        .collect();
    v.sort();
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    ms(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

fn latency_set(params: &str, seed: u64) -> FaultSet {
    let (faults, _r) = set("payments");
    let s = spec(
        "payments",
        &format!("  action: latency\n  latency: {{ {params} }}\n  duration: 60s\n"),
    );
    faults.apply("l", &s, Instant::now(), seed).unwrap();
    faults
}

#[tokio::test(start_paused = true)]
async fn fixed_latency_is_exact() {
    let faults = latency_set("distribution: fixed, fixedMs: 120", 1);
    let d = draws(&faults, 100);
    assert!(d.iter().all(|x| *x == Duration::from_millis(120)));
    assert_eq!(
        faults.extra_latency("/shop.v1.Orders/CreateOrder"),
        Some(Duration::from_millis(120))
    );
    assert_eq!(
        faults.extra_latency("/grpc.health.v1.Health/Check"),
        None,
        "health is exempt"
    );
}

#[tokio::test(start_paused = true)]
async fn uniform_latency_stays_in_range_and_spreads_over_it() {
    let d = draws(
        &latency_set("distribution: uniform, minMs: 50, maxMs: 150", 2),
        10_000,
    );
    assert!(
        ms(d[0]) >= 50.0 && ms(d[d.len() - 1]) <= 150.0,
        "{:?}..{:?}",
        d[0],
        d[d.len() - 1]
    );
    assert!((95.0..105.0).contains(&percentile(&d, 0.5)));
    assert!((70.0..80.0).contains(&percentile(&d, 0.25)));
    assert!(ms(d[0]) < 52.0 && ms(d[d.len() - 1]) > 148.0);
}

#[tokio::test(start_paused = true)]
async fn lognormal_latency_has_the_configured_p50_and_p95() {
    let d = draws(
        &latency_set("distribution: lognormal, p50Ms: 50, p95Ms: 400", 3),
        20_000,
    );
    let (p50, p95) = (percentile(&d, 0.5), percentile(&d, 0.95));
    assert!((45.0..55.0).contains(&p50), "p50 {p50}");
    assert!((340.0..460.0).contains(&p95), "p95 {p95}");
}

#[tokio::test(start_paused = true)]
async fn pareto_latency_starts_at_scale_with_a_heavy_tail() {
    // alpha 1.5, scale 20: median 20 * 2^(1/1.5) = 31.7; p99 20 * 100^(1/1.5) = 430.9
    let d = draws(
        &latency_set("distribution: pareto, scaleMs: 20, shape: 1.5", 4),
        20_000,
    );
    assert!(ms(d[0]) >= 20.0, "below scale: {:?}", d[0]);
    let (p50, p99) = (percentile(&d, 0.5), percentile(&d, 0.99));
    assert!((29.0..34.5).contains(&p50), "p50 {p50}");
    assert!((340.0..540.0).contains(&p99), "p99 {p99}");
    assert!(
        d.iter().all(|x| *x <= Duration::from_secs(60)),
        "draws are capped"
    );
}

#[tokio::test(start_paused = true)]
async fn pareto_draws_are_capped_at_60s() {
    let d = draws(
        &latency_set("distribution: pareto, scaleMs: 10000, shape: 0.1", 5),
        1000,
    );
    assert_eq!(d[d.len() - 1], Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn latency_probability_and_seeds_replay() {
    let params = "distribution: lognormal, p50Ms: 50, p95Ms: 400, probability: 0.3";
    let seq = |seed| {
        let faults = latency_set(params, seed);
        (0..500)
            .map(|_| faults.extra_latency(CHARGE))
            .collect::<Vec<_>>()
    };
    let a = seq(11);
    assert_eq!(a, seq(11), "the same seed gave another sequence");
    assert_ne!(a, seq(12), "another seed gave the same sequence");
    let delayed = a.iter().filter(|d| d.is_some()).count();
    // 500 * 0.3 = 150, sigma 10.2
    assert!((109..=191).contains(&delayed), "{delayed} of 500 delayed");
}

#[tokio::test(start_paused = true)]
async fn chaos_injected_total_counts_by_kind_and_snapshot_shows_faults() {
    let (faults, registry) = set("payments");
    let now = Instant::now();
    faults
        .apply(
            "slow",
            &spec("payments", "  action: latency\n  latency: { distribution: fixed, fixedMs: 5 }\n  duration: 10s\n"),
            now,
            0,
        )
        .unwrap();
    for _ in 0..3 {
        faults.extra_latency(CHARGE);
    }
    faults.apply("down", &outage("10s"), now, 0).unwrap();
    for _ in 0..2 {
        assert!(faults.decide(CHARGE, true).fail.is_some());
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"chaos_injected_total{service="payments",kind="latency"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"chaos_injected_total{service="payments",kind="outage"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"chaos_injected_total{service="payments",kind="error"} 0"#),
        "{text}"
    );
    assert_eq!(faults.injected(Action::Latency), 3);

    let snapshot = faults.snapshot();
    let slow = &snapshot[0];
    assert_eq!(slow["name"], "slow");
    assert_eq!(slow["action"], "latency");
    assert_eq!(slow["params"]["latency"]["fixedMs"], 5);
    assert_eq!(slow["injected"], 3);
    assert_eq!(slow["active"], true);
    assert_eq!(
        slow["expiresAtMs"].as_i64().unwrap() - slow["startedAtMs"].as_i64().unwrap(),
        10_000
    );
    assert_eq!(snapshot[1]["name"], "down");
    assert_eq!(snapshot[1]["injected"], 2);
}
