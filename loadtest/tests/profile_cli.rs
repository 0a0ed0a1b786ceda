//! `frlab profile check|show|list` as a user runs them.

use std::process::Command;

fn frlab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_frlab"))
        .args(args)
        .output()
        .expect("run frlab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_profile_file_checks_ok() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/profiles");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let (ok, out, err) = frlab(&["profile", "check", path.to_str().unwrap()]);
        assert!(ok, "{}: {err}", path.display());
        assert!(out.contains(": OK"), "{out}");
        seen += 1;
    }
    assert_eq!(seen, 7, "a-baseline .. g-adaptive");
}

#[test]
fn a_bad_profile_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "resilience:\n  client:\n    retry:\n      max_attemps: 3\n",
            "max_attemps",
        ),
        (
            "resilience:\n  client:\n    retry:\n      max_attempts: 0\n",
            "resilience.client.retry.max_attempts",
        ),
        (
            "resilience:\n  hops:\n    payments:\n      bulkhead: { max_concurrent: 0 }\n",
            "resilience.hops.payments.bulkhead.max_concurrent",
        ),
        (
            "resilience:\n  client:\n    breaker: { failure_rate: 1.5 }\n",
            "resilience.client.breaker.failure_rate",
        ),
    ];
    for (i, (yaml, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let (ok, _, err) = frlab(&["profile", "check", path.to_str().unwrap()]);
        assert!(!ok, "{yaml} must be refused");
        assert!(err.contains(key), "expected {key:?} in: {err}");
    }
    let (ok, _, err) = frlab(&["profile", "check", "no-such-profile"]);
    assert!(!ok);
    assert!(
        err.contains("no-such-profile") && err.contains("g-adaptive"),
        "{err}"
    );
}

#[test]
fn show_prints_every_hop_and_service() {
    let (ok, out, err) = frlab(&["profile", "show", "e-bulkheads"]);
    assert!(ok, "{err}");
    for needle in [
        "client orders -> payments:",
        "bulkhead: 20 in flight",
        "circuit breaker: trips on 5 failures in a row",
        "server gateway:",
        "load shedding: 200 in flight",
        "notifications: direct call after commit",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (ok, out, _) = frlab(&["profile", "list"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 7, "{out}");
}
