//! The cluster benchmarks, short: `babel-cluster-load`, `babel-call-setup`
//! and `babel-failover` run for a few seconds on real nodes (the
//! `babel-server` binary of this target folder), PostgreSQL and the local
//! nats-server (`scripts/engines.sh` starts both; without them these tests
//! fail and say so), and their reports hold what they claim to measure.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `babel-server` of this target folder (`cargo test --workspace` builds it).
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("babel-server");
    assert!(bin.exists(), "{} is missing: `cargo build -p babel-server` first", bin.display());
    bin
}

fn run(exe: &str, args: &[&str]) -> Value {
    let out = Command::new(exe).args(args).arg("--server-bin").arg(server_bin()).arg("--json").output().unwrap();
    assert!(out.status.success(), "{exe} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn call_setup_times_every_call_of_both_kinds_up_to_the_first_voice() {
    let report = run(env!("CARGO_BIN_EXE_babel-call-setup"), &["--calls", "3", "--nodes", "2"]);
    for kind in ["same_node", "cross_node"] {
        let k = &report[kind];
        assert_eq!(k["calls"], 3, "{report}");
        for step in ["ring", "answered", "voice"] {
            assert_eq!(k[step]["count"], 3, "{kind} {step}: {report}");
        }
        // In every call the answer and the voice come after the ring (the
        // callee answers and speaks only once rung), so every percentile
        // does too.
        assert!(ms(&k["ring"]["p50_ms"]) > 0.0, "{report}");
        for p in ["p50_ms", "max_ms"] {
            assert!(ms(&k["answered"][p]) > ms(&k["ring"][p]), "{kind} {p}: {report}");
            assert!(ms(&k["voice"][p]) > ms(&k["ring"][p]), "{kind} {p}: {report}");
        }
    }
    assert!(ms(&report["ratios"]["voice"]["p50"]) > 0.0, "{report}");
    let cpu = report["cpu_ms_per_call"].as_array().unwrap();
    assert_eq!(cpu[0][0], "nodes", "{report}");
    assert!(ms(&cpu[0][1]) > 0.0, "the nodes worked for the calls: {report}");
}

#[test]
fn cluster_load_measures_each_target_with_no_failed_request() {
    let args = [
        "--users",
        "40",
        "--contacts",
        "4",
        "--connections",
        "20",
        "--seconds",
        "1",
        "--warmup",
        "0.5",
        "--rate",
        "400",
        "--nodes",
        "2",
        "--targets",
        "sqlite,pg,cluster",
    ];
    let report = run(env!("CARGO_BIN_EXE_babel-cluster-load"), &args);
    let runs = report["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["sqlite", "pg", "cluster"], "{report}");
    for r in runs {
        assert!(ms(&r["closed"]["requests"]) > 0.0, "{r}");
        assert_eq!(r["closed"]["bad_status"], 0, "{r}");
        assert_eq!(r["closed"]["failed_connections"], 0, "{r}");
        assert_eq!(r["open"]["unanswered"], 0, "{r}");
        assert_eq!(r["open"]["bad_status"], 0, "{r}");
        // CPU is read for each node and for the engines.
        let processes: Vec<&str> =
            r["closed"]["cpu"]["processes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert!(processes.contains(&"postgres") && processes.contains(&"nats-server"), "{r}");
    }
    assert_eq!(runs[2]["loaded_nodes"], 2, "the cluster's load is spread: {report}");
    let ratios: Vec<&str> = report["ratios"].as_array().unwrap().iter().map(|q| q["what"].as_str().unwrap()).collect();
    assert_eq!(ratios, ["pg / sqlite", "cluster / pg"], "{report}");
}

#[test]
fn failover_brings_the_client_back_through_the_other_node_in_every_run() {
    let report = run(env!("CARGO_BIN_EXE_babel-failover"), &["--runs", "2"]);
    for kind in ["failover", "one_node_restart"] {
        for what in ["back", "request"] {
            assert_eq!(report[kind][what]["count"], 2, "{kind} {what}: {report}");
        }
    }
    // Its contact, on the surviving node, sees it online again each time.
    assert_eq!(report["failover"]["seen"]["count"], 2, "{report}");
    assert_eq!(report["failover"]["seen_missing"], 0, "{report}");
    assert!(ms(&report["failover_over_restart"]["p50"]) > 0.0, "{report}");
}
