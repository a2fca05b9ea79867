//! The load tool's smoke scenario against the debug bridge: 200 connections, personal and
//! fan-out events; the tool itself fails the run on any loss, misroute or dropped
//! connection. Keeps the tool from rotting; the full scenarios are `scripts/bench.sh`.

use std::process::Command;

#[test]
fn the_smoke_scenario_delivers_everything() {
    smoke(&[]);
}

/// Cluster mode: two bridges, one group, Redis between them (the test command starts Redis).
#[test]
fn the_smoke_scenario_delivers_everything_across_two_nodes() {
    let summaries = smoke(&["--cluster"]);
    for s in summaries.as_array().unwrap() {
        assert_eq!(s["nodes"], 2, "{s}");
        let per_node = s["per_node_deliveries_per_sec"].as_array().unwrap();
        assert!(
            per_node.iter().all(|d| d.as_f64().unwrap() > 0.0),
            "every node's sockets got events: {s}"
        );
    }
}

fn smoke(extra: &[&str]) -> serde_json::Value {
    let tool = env!("CARGO_BIN_EXE_realtime-load");
    // `cargo test --workspace` builds the service's binary into the same directory.
    let bridge = std::path::Path::new(tool).with_file_name("realtime-bridge");
    assert!(bridge.exists(), "run with --workspace so {} is built", bridge.display());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("smoke{}.json", extra.join("")));
    let run = Command::new(tool)
        .arg("smoke")
        .args(extra)
        .arg("--bridge-bin")
        .arg(&bridge)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let summaries: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for s in summaries.as_array().unwrap() {
        assert_eq!(s["audit"]["lost"], 0, "{s}");
        assert!(s["latency"]["samples"].as_u64().unwrap() > 0, "{s}");
    }
    println!("{stdout}");
    summaries
}
