//! The report files written from a sample run: every file, round trips, rebuilds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::*;
use crate::measure::{Amplification, Duplicates, HopCounts, Recovery, Rejections, Window};

/// A minimal XML well-formedness check: every tag closes in order, attributes are
/// quoted, text and attribute values use only the five predefined entities (or
/// character references), and there is exactly one root element.
fn check_xml(text: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = text;
    let check_entities = |s: &str| -> Result<(), String> {
        let mut parts = s.split('&');
        parts.next();
        for p in parts {
            let name = p.split(';').next().unwrap_or("");
            let ok = ["amp", "lt", "gt", "quot", "apos"].contains(&name)
                || (name.starts_with('#') && p.contains(';'));
            if !ok || !p.contains(';') {
                return Err(format!("bad entity near &{}", &p[..p.len().min(10)]));
            }
        }
        if s.contains('<') {
            return Err("raw '<'".into());
        }
        Ok(())
    };
    while let Some(lt) = rest.find('<') {
        let text_part = &rest[..lt];
        if stack.is_empty() && !text_part.trim().is_empty() {
            return Err(format!("text outside the root: {text_part:?}"));
        }
        check_entities(text_part)?;
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            let end = r.find("?>").ok_or("unterminated <?")?;
            rest = &r[end + 2..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("unterminated comment")?;
            rest = &r[end + 3..];
            continue;
        }
        let gt = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("stray </{name}>"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == ':')
        {
            return Err(format!("bad tag name {name:?}"));
        }
        // Attributes: name="value" pairs.
        let mut attrs = body[name_end..].trim();
        let mut seen = BTreeSet::new();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or(format!("attribute without value in <{name}>"))?;
            let key = attrs[..eq].trim();
            if !seen.insert(key.to_string()) {
                return Err(format!("duplicate attribute {key} in <{name}>"));
            }
            let after = attrs[eq + 1..].trim_start();
            let q = after.chars().next().ok_or("missing attribute value")?;
            if q != '"' && q != '\'' {
                return Err(format!("unquoted attribute {key} in <{name}>"));
            }
            let close = after[1..].find(q).ok_or("unterminated attribute")?;
            check_entities(&after[1..1 + close])?;
            attrs = after[close + 2..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name.to_string());
        }
    }
    if !rest.trim().is_empty() {
        return Err("text after the root".into());
    }
    match (stack.is_empty(), roots) {
        (true, 1) => Ok(()),
        (false, _) => Err(format!("unclosed {stack:?}")),
        (_, n) => Err(format!("{n} root elements")),
    }
}

#[test]
fn xml_checker_catches_mistakes() {
    assert!(check_xml("<a><b x=\"1\"/>t &amp; u</a>").is_ok());
    assert!(check_xml("<a><b></a>").is_err());
    assert!(check_xml("<a x=1></a>").is_err());
    assert!(check_xml("<a>x & y</a>").is_err());
    assert!(check_xml("<a/><b/>").is_err());
    assert!(check_xml("<a x=\"1\" x=\"2\"/>").is_err());
}

fn window(second: u32, issued: u64, succeeded: u64) -> Window {
    Window {
        second,
        issued,
        succeeded,
        p95_ms: Some(20.0 + f64::from(second)),
    }
}

fn trial(i: u32, success: f64, recovery: Option<Recovery>) -> Trial {
    let mut per_hop = BTreeMap::new();
    per_hop.insert("orders".to_string(), Some(1.0));
    per_hop.insert("inventory".to_string(), Some(1.0));
    per_hop.insert("payments".to_string(), Some(1.5 + f64::from(i) * 0.1));
    per_hop.insert("notifications".to_string(), None);
    let mut counts = BTreeMap::new();
    counts.insert(
        "payments".to_string(),
        HopCounts {
            first_attempts: 200.0,
            attempts_received: 300.0,
        },
    );
    Trial {
        trial: i,
        seed: 42 + u64::from(i),
        issued: 1000,
        succeeded: (success * 1000.0) as u64,
        success_rate: Some(success),
        goodput_rps: success * 50.0,
        latency_ms: Latency {
            p50: 12.5,
            p95: 180.0 + f64::from(i),
            p99: 400.0,
            max: 900.0,
        },
        amplification: Amplification {
            per_hop,
            end_to_end: Some(1.6),
            client: Some(1.0),
            counts,
            logical_requests: 1000,
            place_order_attempts: 1000.0,
            charge_attempts: 1600.0,
        },
        duplicates: Duplicates {
            orders: u64::from(i),
            extra_orders: u64::from(i),
            charges: 1,
            extra_charges: 1,
            deliveries: 0,
            keys_with_multiple_orders: u64::from(i),
            keys_charged_more_than_once: 1,
            keys_with_unrefunded_duplicates: 0,
        },
        lost_events: 2,
        orphaned_reservations: 1,
        wasted_charges: 3,
        unrefunded_unconfirmed: 0,
        sagas_unfinished: 0,
        // The second trial of a cell broke a promise.
        violations: if i == 1 {
            vec!["1 reservations of unconfirmed orders stayed open".into()]
        } else {
            vec![]
        },
        baseline_success_rate: Some(0.99),
        recovery,
        outcome: None,
        breaker: Breaker {
            opens: 2,
            time_open_s: Some(12.5),
        },
        rejections: Rejections {
            bulkhead: 1,
            shed: 0,
            adaptive: 0,
            breaker: 5,
        },
        generator: Generator {
            lag_p99_ms: 0.8,
            dropped: 0,
            cpu_s: 1.2,
            saturated: false,
        },
        cpu_s_per_process: [("payments".to_string(), 0.5), ("frlab".to_string(), 1.2)]
            .into_iter()
            .collect(),
        fault_window: Some(FaultWindow {
            start_s: 3.0,
            end_s: 6.0,
        }),
        timeline: (0..10)
            .filter(|s| *s != 7)
            .map(|s| window(s, 50, if (3..6).contains(&s) { 30 } else { 49 }))
            .collect(),
    }
}

fn sample_run() -> Run {
    let recovered = |s| Some(Recovery::Recovered { seconds: s });
    Run {
        run_id: "20261127-test".into(),
        started_at: "2026-11-27T18:00:00Z".into(),
        finished_at: Some("2026-11-27T18:10:00Z".into()),
        finished: true,
        command: "frlab experiment --trials 3 --quick".into(),
        environment: Environment {
            machine: Machine {
                cores: 2,
                memory_mib: 7900,
                os: "Debian GNU/Linux 12 (bookworm), kernel 6.1, x86_64".into(),
                cpu_model: "Test CPU <fast> & \"cheap\"".into(),
            },
            commit: "a0887a4".into(),
            dirty: Some(false),
            profile_hashes: [
                ("a-baseline".to_string(), fnv1a64_hex("a")),
                ("d-breakers".to_string(), fnv1a64_hex("d")),
            ]
            .into_iter()
            .collect(),
        },
        settings: Settings {
            // A run from before load levels: one rate, cells without a load.
            loads: vec![],
            offered_rps: 50.0,
            deadline_ms: 1000,
            warmup_s: 2.0,
            pre_fault_s: 3.0,
            fault_s: 3.0,
            recovery_s: 4.0,
            drain_s: 2.0,
            seed: 42,
            trials: 3,
            profiles: vec!["a-baseline".into(), "d-breakers".into()],
            scenarios: vec!["payment_errors".into(), "payment_outage".into()],
            stack: "local processes, SQLite".into(),
            payments: None,
            time_scale: None,
        },
        calibration: None,
        cells: vec![
            Cell {
                profile: "a-baseline".into(),
                scenario: "payment_errors".into(),
                load: None,
                trials: vec![
                    trial(0, 0.80, recovered(1.0)),
                    trial(1, 0.82, Some(Recovery::DidNotRecover)),
                    trial(2, 0.81, recovered(2.0)),
                ],
                failed_trials: vec![],
            },
            Cell {
                profile: "d-breakers".into(),
                scenario: "payment_errors".into(),
                load: None,
                trials: vec![
                    trial(0, 0.90, recovered(1.0)),
                    trial(1, 0.92, recovered(2.0)),
                    trial(2, 0.94, recovered(3.0)),
                ],
                failed_trials: vec![FailedTrial {
                    trial: 3,
                    seed: 45,
                    error: "payments did not start".into(),
                }],
            },
            Cell {
                profile: "a-baseline".into(),
                scenario: "payment_outage".into(),
                load: None,
                trials: vec![trial(0, 0.5, None)],
                failed_trials: vec![],
            },
        ],
    }
}

fn svg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    v.sort();
    v
}

#[test]
fn write_all_round_trips_and_writes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = sample_run();
    write_all(&run, dir.path()).unwrap();

    let back = read_run(dir.path()).unwrap();
    assert_eq!(back, run);

    let csv = std::fs::read_to_string(dir.path().join(RESULTS_CSV)).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 7, "header + one row per trial");
    let header: Vec<&str> = lines[0].split(',').collect();
    for line in &lines[1..] {
        assert_eq!(line.split(',').count(), header.len(), "{line}");
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row1: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(row1[col("recovery_s")], "did not recover");
    assert_eq!(row1[col("success_rate")], "0.82");
    assert_eq!(row1[col("amplification_notifications")], "");
    assert_eq!(row1[col("amplification_payments")], "1.6");
    assert_eq!(row1[col("cpu_s_frlab")], "1.2");
    let outage: Vec<&str> = lines[7].split(',').collect();
    assert_eq!(outage[col("recovery_s")], "");

    let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
    assert!(md.contains("**Status: FINISHED**"));
    assert!(
        md.contains("| profile | trials | success rate | p95 (ms) | amplification (e2e) | MTTR |")
    );
    // success rate 80, 82, 81 -> mean 81, s = 1, hw = 4.303 / √3 = 2.484...
    assert!(md.contains("| a-baseline | 3 | 81.0 % ± 2.5 |"), "{md}");
    assert!(md.contains("did not recover (1 of 3 trials)"));
    // MTTR 1, 2, 3 s -> 2.0 ± 4.303 × 1 / √3.
    assert!(md.contains("2.0 s ± 2.5"));
    // A single trial has no interval; a scenario without fault end shows n/a.
    assert!(md.contains("| a-baseline | 1 | 50.0 % (n = 1) |"));
    assert!(md.contains("| d-breakers | 0 | not run |"));
    assert!(md.contains("could not be measured: payments did not start"));
    // A cell with a trial that broke a promise says so, and names it.
    assert!(md.contains("| **BROKEN** (1 of 3 trials) |"), "{md}");
    assert!(md.contains(
        "trial 1 (seed 43) broke what its profile promises:** 1 reservations of unconfirmed \
         orders stayed open"
    ));
    assert!(md.contains("![payment_errors: success rate over time](payment_errors-success.svg)"));
    assert!(md.contains("The seed's claims"));
    assert!(
        md.contains("| d-breakers | 50 req/s | 92 % | 92.0 % ± 5.0 | within CI |"),
        "{md}"
    );
    assert!(md.contains("Commit: `a0887a4`"));

    let svgs = svg_files(dir.path());
    assert_eq!(svgs.len(), 8, "four charts per scenario");
    for path in &svgs {
        let text = std::fs::read_to_string(path).unwrap();
        check_xml(&text)
            .map_err(|e| format!("{}: {e}", path.display()))
            .unwrap();
        assert!(text.contains("<title>"));
        assert!(md.contains(&format!(
            "]({})",
            path.file_name().unwrap().to_str().unwrap()
        )));
    }
    let rec = std::fs::read_to_string(dir.path().join("payment_errors-recovery.svg")).unwrap();
    assert!(rec.contains("did not recover (1/3)"));
    assert!(rec.contains("url(#hatch)"));
    let success = std::fs::read_to_string(dir.path().join("payment_errors-success.svg")).unwrap();
    assert!(success.contains(">fault</text>"));
    assert!(success.contains("d-breakers"));
    // Second 7 is missing: each profile's line is drawn in two pieces.
    assert_eq!(success.matches("<polyline").count(), 4);
}

#[test]
fn run_builds_cells_and_finishes() {
    let base = sample_run();
    let mut run = Run::new("r1", "frlab experiment", base.environment, base.settings);
    assert!(!run.finished && run.finished_at.is_none());
    assert!(run.started_at.ends_with('Z'));
    run.cell_mut("a-baseline", "payment_errors", None)
        .trials
        .push(trial(0, 0.8, None));
    run.cell_mut("a-baseline", "payment_errors", None)
        .trials
        .push(trial(1, 0.8, None));
    run.cell_mut("d-breakers", "payment_errors", None);
    assert_eq!(run.cells.len(), 2);
    assert_eq!(run.cells[0].trials.len(), 2);
    run.finish();
    assert!(run.finished && run.finished_at.is_some());
}

#[test]
fn unfinished_run_says_so_at_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = sample_run();
    run.finished = false;
    run.finished_at = None;
    write_all(&run, dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
    let top: String = md.lines().take(4).collect::<Vec<_>>().join("\n");
    assert!(top.contains("did NOT finish"), "{top}");
    assert!(top.contains("3 of 4 cells"));
}

#[test]
fn rebuild_reproduces_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    write_all(&sample_run(), dir.path()).unwrap();
    let snapshot = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let before = snapshot(dir.path());
    for name in before.keys().filter(|n| *n != RESULTS_JSON) {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    rebuild(dir.path()).unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn rebuild_names_the_missing_or_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = rebuild(dir.path()).unwrap_err();
    assert!(matches!(err, ReportError::Read { .. }));
    assert!(err.to_string().contains("results.json"), "{err}");
    std::fs::write(dir.path().join(RESULTS_JSON), "{\"run_id\": 3}").unwrap();
    let err = rebuild(dir.path()).unwrap_err();
    assert!(matches!(err, ReportError::Invalid { .. }));
    assert!(err.to_string().contains("results.json"), "{err}");
}
