//! The binary's subcommands as a container runs them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// As PID 1 in a container a signal without a handler is ignored, so `docker compose stop`
/// would wait out the grace period and kill the demo producer: it must handle SIGTERM and
/// exit cleanly (here: exit code 0, not death by the signal).
#[test]
fn the_demo_producer_stops_cleanly_on_sigterm() {
    let topics = [
        "order.created",
        "order.updated",
        "order.cancelled",
        "inventory.updated",
        "product.created",
        "product.updated",
    ];
    let broker = realtime_bridge::kafka::dev_broker::DevBroker::start(&topics, 1).expect("a mock cluster");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_realtime-bridge"))
        .args(["demo", "--brokers", broker.bootstrap_servers(), "--rate", "5"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Let it install its handlers and start publishing.
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill").args(["-TERM", &demo.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still running 20 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = demo.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "exited by itself: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("published"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
