//! Supervision of the real app, with faults injected (test builds only: the test command
//! enables the `fault-injection` feature). The embedded broker's demo stream supplies records.
#![cfg(feature = "fault-injection")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, build_app, eventually, spawn};
use realtime_bridge::faults::{Fault, Faults};

fn counter(health: &serde_json::Value, section: &str, name: &str) -> u64 {
    health[section][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{section}.{name} in {health}"))
}

/// The app on the embedded broker with the demo stream on, ready and consuming, and its faults.
async fn consuming_app() -> (TestApp, Arc<Faults>) {
    // The mock cluster lets a closed member's partitions go only after its session
    // timeout (Apache Kafka acts on the LeaveGroup at once): keep it short.
    let app = build_app(&[("DEV_DEMO_RATE", "50"), ("KAFKA_SESSION_TIMEOUT_MS", "6000")]).await;
    let faults = app.faults();
    let app = spawn(app);
    eventually("readiness", || async { app.status("/health/ready").await == 200 }).await;
    eventually("records flowing", || async {
        counter(&app.health().await, "kafka", "recordsConsumed") > 0
    })
    .await;
    (app, faults)
}

#[tokio::test]
async fn a_consumer_that_dies_turns_the_node_unready_and_is_rebuilt_from_the_committed_offsets() {
    let (app, faults) = consuming_app().await;

    faults.arm(Fault::ConsumerPanic, 1);
    eventually("not ready after the consumer died", || async {
        app.status("/health/ready").await == 503
    })
    .await;
    let health = app.health().await;
    assert_eq!(health["kafka"]["status"], "connecting", "{health}");
    assert_eq!(counter(&health, "kafka", "consumerRestarts"), 1);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"realtime_task_failures_total{task="consumer"}"#),
        "the failure is counted"
    );

    // The rebuilt consumer rejoins and consumes again; the process never stopped serving.
    let before = counter(&app.health().await, "socketio", "emits");
    eventually("ready again", || async { app.status("/health/ready").await == 200 }).await;
    eventually("events delivered again", || async {
        counter(&app.health().await, "socketio", "emits") > before
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_record_whose_handling_panics_is_dead_lettered_and_the_next_ones_delivered() {
    let (app, faults) = consuming_app().await;

    faults.arm(Fault::RecordPanic, 1);
    eventually("the record dead-lettered", || async {
        counter(&app.health().await, "kafka", "recordsDeadLettered") == 1
    })
    .await;
    let emits = counter(&app.health().await, "socketio", "emits");
    eventually("later records delivered", || async {
        counter(&app.health().await, "socketio", "emits") > emits
    })
    .await;
    let health = app.health().await;
    assert_eq!(health["status"], "ok", "a poison record does not make the node unready: {health}");
    assert_eq!(counter(&health, "kafka", "consumerRestarts"), 0, "the consumer did not die");
    app.stop().await;
}

#[tokio::test]
async fn a_housekeeping_loop_that_dies_drains_the_process_and_exits_non_zero() {
    let app = build_app(&[]).await;
    let faults = app.faults();
    let app = spawn(app);
    eventually("readiness", || async { app.status("/health/ready").await == 200 }).await;

    faults.arm(Fault::HousekeepingPanic, 1);
    let result = tokio::time::timeout(Duration::from_secs(30), app.task)
        .await
        .expect("the process drains and ends")
        .unwrap();
    let error = result.expect_err("a failed task makes the process exit non-zero");
    assert!(error.to_string().contains("metrics-upkeep"), "{error}");
    assert!(error.to_string().contains("injected fault"), "{error}");
}
