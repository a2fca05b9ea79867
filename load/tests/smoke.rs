//! The load tool's smoke scenario against the debug bridge: 200 connections, personal and
//! fan-out events; the tool itself fails the run on any loss, misroute or dropped
//! connection. Keeps the tool from rotting; the full scenarios are `scripts/bench.sh`.

use std::process::Command;

#[test]
fn the_smoke_scenario_delivers_everything() {
    let tool = env!("CARGO_BIN_EXE_realtime-load");
    // `cargo test --workspace` builds the service's binary into the same directory.
    let bridge = std::path::Path::new(tool).with_file_name("realtime-bridge");
    assert!(bridge.exists(), "run with --workspace so {} is built", bridge.display());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smoke.json");
    let run = Command::new(tool)
        .arg("smoke")
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
}
