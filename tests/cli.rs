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

/// `check-mapping` is how a producer team tries a mapping before deploying it: the event a
/// record becomes (exit 0), the dead-letter reason (exit 1), the file's error with its line.
#[test]
fn check_mapping_tells_what_a_record_becomes() {
    let dir = std::env::temp_dir().join(format!("check-mapping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mapping = dir.join("mapping.toml");
    std::fs::write(
        &mapping,
        "[[source]]\ntopic = \"shop.orders\"\nevent = \"{header:eventType}\"\n[source.events]\nOrderShipped = \"order.updated\"\n[source.fields]\norderId = \"/id\"\nbuyerId = \"/customer/id\"\nstatus = \"/state\"\n",
    )
    .unwrap();
    let record = dir.join("record.json");
    std::fs::write(&record, r#"{"id": 7, "customer": {"id": "u-1"}, "state": "SHIPPED"}"#).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_realtime-bridge"))
            .arg("check-mapping")
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (m, r) = (mapping.to_str().unwrap(), record.to_str().unwrap());
    let (code, out) = run(&[m, "--record", r, "--topic", "shop.orders", "--header", "eventType=OrderShipped"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("event order.updated (format json, envelope none, by the source at line 1)"),
        "{out}"
    );
    assert!(out.contains("\"buyerId\": \"u-1\"") && out.contains("\"orderId\": \"7\""), "{out}");
    let (code, out) = run(&[m, "--record", r, "--topic", "shop.orders", "--header", "eventType=OrderRefunded"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("event OrderRefunded is not in [source.events]"), "{out}");
    let (code, out) = run(&[m, "--record", r, "--topic", "shop.returns"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no source for topic shop.returns"), "{out}");
    std::fs::write(&mapping, "[[source]]\ntopic = \"a\"\nevent = \"{headr:x}\"\n").unwrap();
    let (code, out) = run(&[m]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("line 3: event:"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
