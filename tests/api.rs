//! The operator REST API, its error policy, the OpenAPI document and /metrics, against the
//! real app on port 0. (REST → socket delivery is covered end to end in e2e/api.test.mjs.)

mod common;

use std::time::Duration;

use common::{API_KEY, SECRET, TestApp, spawn_app};
use realtime_bridge::auth::mint_hs256;
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = API_KEY;

/// No broker is needed for the REST side: the consumer just keeps retrying.
async fn app(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("KAFKA_BROKERS", "127.0.0.1:1"), ("API_KEYS", KEY), ("REST_MAX_BODY_BYTES", "2048")];
    vars.extend_from_slice(extra);
    spawn_app(&vars).await
}

const NOTIFY: &str = "/realtime/test/notification";
const ORDER: &str = "/realtime/broadcast/order";

fn notification() -> String {
    json!({"userId": "u-1", "title": "Hi", "message": "Hello"}).to_string()
}

fn bearer(user: &str, admin: bool) -> String {
    format!("Bearer {}", mint_hs256(SECRET, user, admin, Duration::from_secs(60)))
}

/// The API document `/api/docs/<name>.json` as the app serves it.
async fn served_document(app: &TestApp, name: &str) -> Value {
    let url = app.url(&format!("/api/docs/{name}.json"));
    app.http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn the_served_asyncapi_document_and_the_record_schemas_are_the_committed_ones() {
    let app = app(&[]).await;
    let served = served_document(&app, "asyncapi").await;
    let committed: Value = serde_json::from_str(include_str!("../openapi/asyncapi.json")).unwrap();
    assert!(
        served == committed,
        "openapi/asyncapi.json is stale: regenerate with scripts/generate.sh"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let generated = realtime_bridge::contract::record_schemas();
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, generated.len(), "schemas/ holds exactly one file per consumed topic");
    for (file, schema) in generated {
        let committed: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(&file)).unwrap()).unwrap();
        assert!(committed == schema, "schemas/{file} is stale: regenerate with scripts/generate.sh");
    }
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = app(&[]).await;
    let served = served_document(&app, "openapi").await;
    let committed: Value = serde_json::from_str(include_str!("../openapi/openapi.json")).unwrap();
    assert!(
        served == committed,
        "openapi/openapi.json is stale: regenerate it with `cargo run -q -- openapi > openapi/openapi.json`"
    );
    let ui = app.http.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(
        ui.text().await.unwrap().contains("swagger-ui"),
        "Swagger UI is served from the binary"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_without_credentials_is_401() {
    let app = app(&[]).await;
    let (status, err) = app.post(NOTIFY, None, "application/json", notification()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(err["error"].as_str().unwrap().starts_with("authentication required"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_api_key_or_a_malformed_token_is_401_with_the_reason() {
    let app = app(&[]).await;
    let (status, err) = app
        .post(NOTIFY, Some(("x-api-key", "wrong")), "application/json", notification())
        .await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid API key")));
    let (status, err) = app
        .post(NOTIFY, Some(("authorization", "Bearer nope")), "application/json", notification())
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid token: malformed"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_buyer_token_is_403() {
    let app = app(&[]).await;
    let buyer = bearer("u-1", false);
    let (status, err) = app
        .post(NOTIFY, Some(("authorization", &buyer)), "application/json", notification())
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden: admin role required"))
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_token_or_an_api_key_sends_through_the_room_history() {
    let app = app(&[]).await;
    let admin = bearer("ops", true);
    let (status, ok) = app
        .post(NOTIFY, Some(("authorization", &admin)), "application/json", notification())
        .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert!(ok["id"].as_str().unwrap().starts_with("rest:"));
    assert_eq!(ok["deliveries"][0]["room"], "user:u-1");
    assert_eq!(ok["deliveries"][0]["event"], "notification");
    assert_eq!(ok["deliveries"][0]["position"]["seq"], 1);
    let (status, ok) = app.post(NOTIFY, Some(("x-api-key", KEY)), "application/json", notification()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok["deliveries"][0]["position"]["seq"], 2, "REST sends go through the room history");
    app.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_refused_even_next_to_a_good_key() {
    let app = app(&[]).await;
    let (status, _) = app
        .post(NOTIFY, Some(("authorization", "Bearer forged")), "application/json", notification())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mixed = app
        .http
        .post(app.url(NOTIFY))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .header("authorization", "Bearer forged")
        .body(notification())
        .send()
        .await
        .unwrap();
    assert_eq!(
        mixed.status(),
        StatusCode::UNAUTHORIZED,
        "a bad token is refused even next to a good key"
    );
    app.stop().await;
}

#[tokio::test]
async fn stats_without_credentials_are_401_naming_the_schemes() {
    let app = app(&[]).await;
    let stats = app.http.get(app.url("/realtime/stats")).send().await.unwrap();
    assert_eq!(stats.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(stats.headers()["www-authenticate"], "Bearer, ApiKey");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_mistyped_or_empty_field_is_422_naming_it() {
    let app = app(&[]).await;
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (ORDER, json!({"orderId": "1", "status": "paid"}), Some("userId")),
        (ORDER, json!({"userId": 5, "orderId": "1", "status": "paid"}), Some("userId")),
        (ORDER, json!({"userId": "u", "orderId": " ", "status": "paid"}), Some("orderId")),
        (
            ORDER,
            json!({"userId": "u", "orderId": "1", "status": "paid", "previousStatus": ""}),
            Some("previousStatus"),
        ),
        (ORDER, json!([]), None),
        (
            "/realtime/broadcast/inventory",
            json!({"productId": "p", "stock": "lots"}),
            Some("stock"),
        ),
        (
            "/realtime/broadcast/inventory",
            json!({"productId": "p", "stock": 1e12}),
            Some("stock"),
        ),
        (
            "/realtime/broadcast/admin",
            json!({"event": "Bad Name!", "data": {}}),
            Some("event"),
        ),
    ];
    for (path, body, field) in cases {
        let (got, err) = app.broadcast(path, body.clone()).await;
        assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["field"].as_str(), field, "{body}: {err}");
        assert!(!err["error"].as_str().unwrap().is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = app(&[]).await;
    let (status, err) = app.post(ORDER, Some(("x-api-key", KEY)), "application/json", "{ not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().starts_with("malformed JSON"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = app(&[]).await;
    let (status, _) = app.post(ORDER, Some(("x-api-key", KEY)), "text/plain", "{}").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = app(&[]).await;
    let huge = json!({"userId": "u", "orderId": "x".repeat(4096), "status": "paid"}).to_string();
    let (status, _) = app.post(ORDER, Some(("x-api-key", KEY)), "application/json", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_stats_query_is_400() {
    let app = app(&[]).await;
    let (status, _) = app.stats("?top=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, err) = app.stats("?top=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn stats_and_metrics_report_what_happened() {
    let app = app(&[]).await;
    let (status, _) = app
        .broadcast(
            "/realtime/broadcast/inventory",
            json!({"productId": "p-9", "stock": 0, "previousStock": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, stats) = app.stats("?top=5").await;
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stats["connections"], 0);
    assert_eq!(stats["totals"]["restBroadcasts"], 1);
    assert_eq!(
        stats["events"]["inventory:updated"]["routed"], 2,
        "to inventory:updates and product:p-9"
    );
    assert_eq!(
        stats["events"]["admin:inventory:out-of-stock"]["routed"], 1,
        "REST inventory updates raise alerts too"
    );
    assert_eq!(stats["kafka"]["assignment"], json!([]));

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.headers()["content-type"], "text/plain; version=0.0.4");
    let text = metrics.text().await.unwrap();
    for needle in [
        "realtime_events_emitted_total{event=\"admin:inventory:out-of-stock\"}",
        "realtime_rest_broadcasts_total{kind=\"inventory\"}",
        "realtime_http_requests_total{method=\"POST\",route=\"/realtime/broadcast/inventory\",status=\"200\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_can_move_to_their_own_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let app = app(&[("METRICS_PORT", &port)]).await;
    assert_eq!(app.status("/metrics").await, 404, "not on the public port");
    let res = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("realtime_"));
    app.stop().await;
}

#[tokio::test]
async fn junk_requests_cannot_grow_the_metrics() {
    let app = app(&[]).await;
    // Random methods, paths and query keys from an unauthenticated client.
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        let path = format!("/x{i}/{}?k{i}=v", i * 7919);
        let _ = app.http.request(method, app.url(&path)).send().await.unwrap();
    }
    let text = app.metrics().await;
    let junk: Vec<&str> = text.lines().filter(|l| l.contains("JUNK") || l.contains("/x1")).collect();
    assert!(junk.is_empty(), "outsider-chosen labels in /metrics: {junk:?}");
    assert!(
        text.contains(r#"realtime_http_requests_total{method="other",route="unmatched",status="#),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_broadcast_the_history_cannot_store_gets_a_fixed_503_without_internals() {
    // Nothing listens on port 1: every history call fails (after the 2 s connect timeout).
    let app = app(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let (status, body) = app
        .broadcast("/realtime/broadcast/inventory", json!({"productId": "p-9", "stock": 3}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"error": realtime_bridge::http::broadcast::BROADCAST_UNAVAILABLE}),
        "the store's error text stays in the logs"
    );
    // The Socket.IO namespace does not exist yet (its Redis channels could not be
    // subscribed): stats still answer, and shutdown still drains (socketioxide panics
    // when asked about a namespace it does not have).
    let (status, stats) = app.stats("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["connections"], 0);
    assert_eq!(stats["cluster"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn a_products_latest_state_is_readable_by_any_signed_in_user_and_404_until_known() {
    let app = app(&[]).await;
    let get = |auth: Option<(&'static str, String)>, id: &'static str| {
        let mut req = app.http.get(app.url(&format!("/realtime/products/{id}")));
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let buyer = Some((
        "authorization",
        format!("Bearer {}", mint_hs256(SECRET, "shopper", false, Duration::from_secs(600))),
    ));
    assert_eq!(get(None, "p-9").await.0, 401);
    let (status, body) = get(buyer.clone(), "p-9").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(buyer.clone(), "p%209").await;
    assert_eq!((status, body["field"].as_str()), (422, Some("productId")), "{body}");

    let sent = app
        .broadcast(
            "/realtime/broadcast/inventory",
            json!({"productId": "p-9", "stock": 7, "sku": "MUG"}),
        )
        .await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    app.broadcast(
        "/realtime/broadcast/inventory",
        json!({"productId": "p-9", "stock": 6, "previousStock": 7}),
    )
    .await;
    let (status, body) = get(buyer, "p-9").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["productId"], "p-9");
    assert_eq!(
        (body["state"]["stock"].as_i64(), body["state"]["previousStock"].as_i64()),
        (Some(6), Some(7))
    );
    assert_eq!(body["state"]["sku"], "MUG", "merged with what the earlier update said");
    assert_eq!(
        (body["position"]["room"].as_str(), body["position"]["seq"].as_u64()),
        (Some("product:p-9"), Some(2))
    );
    let (status, _) = get(Some(("x-api-key", API_KEY.to_owned())), "p-9").await;
    assert_eq!(status, 200, "an API key works too");
    app.stop().await;
}
