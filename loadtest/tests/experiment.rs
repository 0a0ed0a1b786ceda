//! A short real experiment (seconds per cell, real processes): naive retries amplify load
//! at payments while the baseline does not; the full profile leaves no duplicate charge and
//! no lost event under a retry storm; breakers open under an outage and their time open is
//! sampled; the report files are written and parse back.

use std::time::Duration;

use frlab::experiment::{Backend, PaymentsModel, Plan, Reference, run};
use frlab::report;

fn short_plan(profiles: &[&str], scenarios: &[&str]) -> Plan {
    Plan {
        profiles: profiles.iter().map(|s| s.to_string()).collect(),
        scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
        trials: 1,
        seed: 7,
        loads: vec![],
        rate: Some(30.0),
        warmup: Duration::from_secs(1),
        pre_fault: Duration::from_secs(1),
        fault: Duration::from_secs(4),
        recovery: Duration::from_secs(5),
        deadline: Duration::from_secs(2),
        time_scale: 0.1,
        payments: PaymentsModel::default(),
    }
}

#[tokio::test]
async fn naive_retries_amplify_and_the_full_profile_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("errors");
    let plan = short_plan(&["a-baseline", "b-naive-retries"], &["payment_errors"]);
    let run1 = run(
        &plan,
        &Reference::default(),
        &Backend::default(),
        &out,
        "test",
    )
    .await
    .expect("run");
    assert!(run1.finished);
    let cell = |run: &report::Run, p: &str| {
        let c = run.cells.iter().find(|c| c.profile == p).unwrap().clone();
        assert!(c.failed_trials.is_empty(), "{p}: {:?}", c.failed_trials);
        c.trials[0].clone()
    };
    let a = cell(&run1, "a-baseline");
    let b = cell(&run1, "b-naive-retries");
    assert_eq!(
        a.amplification.per_hop["payments"],
        Some(1.0),
        "{:?}",
        a.amplification
    );
    assert_eq!(
        a.amplification.end_to_end,
        Some(1.0),
        "{:?}",
        a.amplification
    );
    let b_payments = b.amplification.per_hop["payments"].unwrap();
    assert!(
        b_payments > 1.0,
        "naive retries amplify at payments: {:?}",
        b.amplification
    );
    assert!(
        a.success_rate.unwrap() < 1.0,
        "the baseline lost orders to the 20 % errors"
    );

    // The report files exist and parse; rebuilding them from results.json works.
    for file in [
        "results.json",
        "results.csv",
        "report.md",
        "payment_errors-rate30-success.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let read = report::read_run(&out).expect("results.json parses");
    assert_eq!(read.cells.len(), run1.cells.len());
    assert_eq!(
        read.cells[0].trials[0].issued,
        run1.cells[0].trials[0].issued
    );
    assert!(read.finished);
    report::rebuild(&out).expect("rebuild");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("b-naive-retries") && md.contains("FINISHED"),
        "{md}"
    );

    let out = dir.path().join("storm");
    let plan = short_plan(&["f-full"], &["retry_storm"]);
    let run2 = run(
        &plan,
        &Reference::default(),
        &Backend::default(),
        &out,
        "test",
    )
    .await
    .expect("run");
    let f = cell(&run2, "f-full");
    assert!(f.issued > 0);
    assert_eq!(
        f.duplicates.charges, 0,
        "no order charged twice: {:?}",
        f.duplicates
    );
    assert_eq!(
        f.duplicates.orders, 0,
        "no key with two confirmed orders: {:?}",
        f.duplicates
    );
    assert_eq!(f.lost_events, 0, "every confirmed order was delivered");
    // The load generator retries only what failed; f-full's own retries may leave it little.
    assert!(f.amplification.client.unwrap() >= 1.0);

    // Breakers under an outage: they open, and the sampled time open is in the report.
    let out = dir.path().join("outage");
    let plan = short_plan(&["d-breakers"], &["payment_outage"]);
    let run3 = run(
        &plan,
        &Reference::default(),
        &Backend::default(),
        &out,
        "test",
    )
    .await
    .expect("run");
    let d = cell(&run3, "d-breakers");
    assert!(d.breaker.opens >= 1, "{:?}", d.breaker);
    let open_s = d.breaker.time_open_s.expect("time open sampled");
    assert!(
        open_s > 0.0 && open_s <= 10.0,
        "some of the 10 s measured load, not more: {open_s}"
    );
}
