//! The test harness shared by the integration tests: the real app on port 0.
#![allow(dead_code)] // each test crate uses part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use realtime_bridge::app::App;
use realtime_bridge::config::Config;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "integration-secret-integration-secret";
/// An API key the REST tests configure (`API_KEYS`).
pub const API_KEY: &str = "test-api-key-test-api-key-test-api-key";

async fn json_answer(res: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
    (status, body)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn status(&self, path: &str) -> u16 {
        self.http.get(self.url(path)).send().await.unwrap().status().as_u16()
    }

    /// `POST path` with `body` as `content_type`, sending the `auth` header if any; the
    /// status and the JSON body (every answer of the API is JSON).
    pub async fn post(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut req = self.http.post(self.url(path)).header("content-type", content_type).body(body);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        json_answer(req.send().await.unwrap()).await
    }

    /// A REST broadcast (`/realtime/broadcast/<kind>`, `/realtime/test/notification`) with
    /// the test API key.
    pub async fn broadcast(&self, path: &str, body: serde_json::Value) -> (reqwest::StatusCode, serde_json::Value) {
        self.post(path, Some(("x-api-key", API_KEY)), "application/json", body.to_string())
            .await
    }

    /// `GET /realtime/stats` with `query` (e.g. `?top=5`) and the test API key.
    pub async fn stats(&self, query: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let req = self
            .http
            .get(self.url(&format!("/realtime/stats{query}")))
            .header("x-api-key", API_KEY);
        json_answer(req.send().await.unwrap()).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// The `/health` body.
    pub async fn health(&self) -> serde_json::Value {
        self.http.get(self.url("/health")).send().await.unwrap().json().await.unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shutdown within grace")
            .unwrap()
            .unwrap();
    }
}

/// Builds the app from `vars` (plus port 0 on loopback) and runs it in the background.
pub async fn spawn_app(vars: &[(&str, &str)]) -> TestApp {
    spawn(build_app(vars).await)
}

/// Builds the app from `vars` (plus port 0 on loopback, a test key, no demo stream unless
/// `DEV_DEMO_RATE` is given).
pub async fn build_app(vars: &[(&str, &str)]) -> App {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DEV_DEMO_RATE".to_owned(), "0".to_owned()),
        ("SHUTDOWN_GRACE_SECS".to_owned(), "5".to_owned()),
    ]);
    map.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    map.insert("PORT".into(), "0".into());
    map.insert("HOST".into(), "127.0.0.1".into());
    map.insert("JWT_SECRET".into(), SECRET.into());
    let config = Config::from_lookup(|k| map.get(k).cloned()).expect("valid test config");
    App::build(config).await.expect("app builds")
}

/// Runs a built app in the background.
pub fn spawn(app: App) -> TestApp {
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        addr,
        shutdown,
        task,
        http: reqwest::Client::new(),
    }
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Socket.IO client over Engine.IO long-polling, packet by packet: the tests that race a
/// client's packets against the server's handlers need to say exactly what is sent when.
pub struct Polling {
    http: reqwest::Client,
    url: String,
    /// Packets received but not yet taken.
    pending: std::collections::VecDeque<String>,
}

impl Polling {
    /// Opens an Engine.IO session (no Socket.IO connect yet).
    pub async fn open(app: &TestApp) -> Polling {
        let open = app.http.get(app.url("/socket.io/?EIO=4&transport=polling")).send().await.unwrap();
        let open = open.text().await.unwrap();
        let handshake: serde_json::Value = serde_json::from_str(open.strip_prefix('0').expect("engine.io open packet")).unwrap();
        let sid = handshake["sid"].as_str().unwrap();
        Polling {
            http: app.http.clone(),
            url: app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}")),
            pending: Default::default(),
        }
    }

    /// Sends `packets` in one request (Engine.IO's record separator between them).
    pub async fn send(&self, packets: &[String]) {
        let res = self.http.post(&self.url).body(packets.join("\u{1e}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }

    /// The first packet received that starts with `prefix` (others are kept for later
    /// calls; pings are answered).
    pub async fn next(&mut self, prefix: &str) -> String {
        loop {
            if let Some(i) = self.pending.iter().position(|p| p.starts_with(prefix)) {
                return self.pending.remove(i).unwrap_or_default();
            }
            let body = self.http.get(&self.url).send().await.unwrap().text().await.unwrap();
            for packet in body.split('\u{1e}') {
                if packet == "2" {
                    self.send(&["3".to_owned()]).await;
                } else {
                    self.pending.push_back(packet.to_owned());
                }
            }
        }
    }

    /// Joins the default namespace with this token and handshake `auth` extras; the
    /// Socket.IO connect answer (`40{…}` or `44{…}`).
    pub async fn connect(&mut self, token: &str, positions: serde_json::Value) -> String {
        let auth = serde_json::json!({"token": token, "positions": positions});
        self.send(&[format!("40{auth}")]).await;
        self.next("4").await
    }

    /// The payload of the next `event` the server emits.
    pub async fn event(&mut self, event: &str) -> serde_json::Value {
        let prefix = format!("42[\"{event}\",");
        let packet = self.next(&prefix).await;
        let array: serde_json::Value = serde_json::from_str(&packet[2..]).unwrap();
        array[1].clone()
    }

    /// The ack answering the event sent with `id`.
    pub async fn ack(&mut self, id: u32) -> serde_json::Value {
        let packet = self.next(&format!("43{id}[")).await;
        let array: serde_json::Value = serde_json::from_str(&packet[2 + id.to_string().len()..]).unwrap();
        array[0].clone()
    }

    /// A client event packet asking for an ack with `id`.
    pub fn emit_packet(id: u32, event: &str, data: serde_json::Value) -> String {
        format!("42{id}{}", serde_json::json!([event, data]))
    }

    /// Closes the Engine.IO session (the transport goes away, no Socket.IO disconnect).
    pub async fn close(&self) {
        self.send(&["1".to_owned()]).await;
    }
}
