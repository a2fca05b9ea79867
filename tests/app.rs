//! Integration tests: the real app on port 0, talked to over HTTP and Engine.IO polling.

mod common;

use std::time::Duration;

use common::{SECRET, TestApp, eventually, spawn_app};

#[tokio::test]
async fn embedded_broker_makes_the_app_ready_and_it_drains_on_shutdown() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.status("/health/live").await, 200);
    eventually("readiness", || async { app.status("/health/ready").await == 200 }).await;
    let body: serde_json::Value = app.http.get(app.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["kafka"]["status"], "up");
    assert_eq!(body["kafka"]["embeddedBroker"], true);
    assert!(body["kafka"]["assignedPartitions"].as_i64().unwrap() > 0);
    app.stop().await;
}

#[tokio::test]
async fn unreachable_broker_is_live_but_not_ready() {
    // Port 1 on loopback refuses connections: the consumer keeps retrying in the background.
    let app = spawn_app(&[("KAFKA_BROKERS", "127.0.0.1:1")]).await;
    assert_eq!(app.status("/health/live").await, 200);
    assert_eq!(app.status("/health/ready").await, 503);
    let body: serde_json::Value = app.http.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["kafka"]["status"], "connecting");
    app.stop().await;
}

/// Opens an Engine.IO polling session and asks to join the default namespace with `auth`.
async fn socketio_connect(app: &TestApp, auth: &str) -> String {
    let open = app
        .http
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handshake: serde_json::Value = serde_json::from_str(open.strip_prefix('0').expect("engine.io open packet")).unwrap();
    let sid = handshake["sid"].as_str().unwrap().to_owned();
    let url = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let posted = app.http.post(&url).body(format!("40{auth}")).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    // A poll may batch a heartbeat ("2") with the reply, separated by 0x1e.
    let body = app.http.get(&url).send().await.unwrap().text().await.unwrap();
    body.split('\u{1e}')
        .find(|p| p.starts_with('4'))
        .unwrap_or_else(|| panic!("no socket.io packet in {body:?}"))
        .to_owned()
}

#[tokio::test]
async fn handshake_errors_come_back_as_connect_error_with_a_reason() {
    let app = spawn_app(&[("KAFKA_BROKERS", "127.0.0.1:1")]).await;
    let reply = socketio_connect(&app, r#"{"token":"nope"}"#).await;
    assert_eq!(reply, r#"44{"message":"invalid token: malformed"}"#);
    let reply = socketio_connect(&app, "").await;
    assert_eq!(reply, r#"44{"message":"authentication required: pass a JWT in auth.token"}"#);

    let good = realtime_bridge::auth::mint_hs256(SECRET, "u-42", false, Duration::from_secs(60));
    let reply = socketio_connect(&app, &format!(r#"{{"token":"{good}"}}"#)).await;
    assert!(reply.starts_with("40{\"sid\""), "{reply}");
    app.stop().await;
}

/// Opens an Engine.IO polling session and never connects to Socket.IO; the status.
async fn open_session(app: &TestApp) -> (u16, String) {
    let res = app.http.get(app.url("/socket.io/?EIO=4&transport=polling")).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn engine_sessions_without_a_connect_are_bounded_per_address_and_in_all() {
    let app = spawn_app(&[("KAFKA_BROKERS", "127.0.0.1:1"), ("HANDSHAKES_PER_MINUTE_PER_IP", "5")]).await;
    for _ in 0..10 {
        assert_eq!(open_session(&app).await.0, 200, "twice the handshake budget");
    }
    let (status, body) = open_session(&app).await;
    assert_eq!(status, 429);
    assert!(body.contains("too many sessions opened without connecting"), "{body}");
    // A request of an existing session is not a new one.
    assert_eq!(app.status("/socket.io/?EIO=4&transport=polling&sid=unknown").await, 400);
    app.stop().await;

    let app = spawn_app(&[("KAFKA_BROKERS", "127.0.0.1:1"), ("MAX_PENDING_SESSIONS", "3")]).await;
    for _ in 0..3 {
        assert_eq!(open_session(&app).await.0, 200);
    }
    assert_eq!(open_session(&app).await.0, 429, "node-wide bound");
    app.stop().await;
}

#[tokio::test]
async fn a_draining_node_refuses_new_handshakes_with_503_while_still_alive() {
    let app = spawn_app(&[("SHUTDOWN_DELAY_SECS", "3")]).await;
    eventually("readiness", || async { app.status("/health/ready").await == 200 }).await;
    let token = realtime_bridge::auth::mint_hs256(SECRET, "u-drain", false, Duration::from_secs(600));
    let open = socketio_connect(&app, &format!(r#"{{"token":"{token}"}}"#)).await;
    assert!(open.starts_with("40"), "{open}");

    app.shutdown.cancel();
    eventually("readiness off", || async { app.status("/health/ready").await == 503 }).await;
    let refused = app.http.get(app.url("/socket.io/?EIO=4&transport=polling")).send().await.unwrap();
    assert_eq!(refused.status(), 503, "a new Engine.IO session while draining");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("another node"), "{body}");
    let websocket = app.http.get(app.url("/socket.io/?EIO=4&transport=websocket")).send().await.unwrap();
    assert_eq!(websocket.status(), 503, "either transport");
    assert_eq!(app.status("/health/live").await, 200, "still alive while draining");
    tokio::time::timeout(Duration::from_secs(30), app.task)
        .await
        .expect("drain within grace")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_dashboard_is_off_in_production_unless_enabled_and_development_leads_to_it() {
    let production = [
        ("APP_ENV", "production"),
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("CORS_ORIGINS", "https://shop.example.com"),
    ];
    let app = spawn_app(&production).await;
    assert_eq!(app.status("/dashboard").await, 404, "off by default in production");
    assert_eq!(app.status("/").await, 404);
    app.stop().await;

    let enabled: Vec<(&str, &str)> = production.iter().copied().chain([("DASHBOARD_ENABLED", "true")]).collect();
    let app = spawn_app(&enabled).await;
    let page = app.http.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(app.status("/").await, 404, "no redirect in production");
    app.stop().await;

    let app = spawn_app(&[("KAFKA_BROKERS", "127.0.0.1:1")]).await;
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (root.status().as_u16(), root.headers()["location"].to_str().unwrap()),
        (307, "/dashboard")
    );
    app.stop().await;
}
