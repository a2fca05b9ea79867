//! Prometheus metrics: every name and label in one place, the process-wide recorder, and
//! the HTTP middleware counting requests. Recorded through [`crate::stats::Stats`].
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `realtime_kafka_records_consumed_total` | counter | `topic` |
//! | `realtime_kafka_records_invalid_total` | counter | `topic` |
//! | `realtime_kafka_records_dead_lettered_total` | counter | `topic` |
//! | `realtime_kafka_dead_letter_failures_total` | counter | |
//! | `realtime_kafka_consumer_lag` | gauge | `topic`, `partition` |
//! | `realtime_events_consumed_total` | counter | `type` (e.g. `order.updated`) |
//! | `realtime_events_emitted_total` | counter | `event` (socket event name) |
//! | `realtime_emit_errors_total` | counter | `event` (room emits some socket missed) |
//! | `realtime_emit_dropped_total` | counter | `event` (socket deliveries dropped: buffer full) |
//! | `realtime_kafka_to_emit_seconds` | histogram | (record timestamp → emit) |
//! | `realtime_sockets_connected` | gauge | |
//! | `realtime_socket_connects_total` | counter | |
//! | `realtime_socket_disconnects_total` | counter | `reason` |
//! | `realtime_auth_failures_total` | counter | |
//! | `realtime_replays_total` | counter | `recovered` (`true` / `false`) |
//! | `realtime_rest_broadcasts_total` | counter | `kind` |
//! | `realtime_limit_refusals_total` | counter | `limit` |
//! | `realtime_slow_disconnects_total` | counter | |
//! | `realtime_product_states_evicted_total` | counter | |
//! | `realtime_task_failures_total` | counter | `task` |
//! | `realtime_record_panics_total` | counter | |
//! | `realtime_http_requests_total` | counter | `method`, `route`, `status` |
//! | `realtime_http_request_duration_seconds` | histogram | `method`, `route` |

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds: from 1 ms (a fast broker) to 10 s (a backlog).
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process-wide Prometheus recorder, installed on first use. One per process because
/// the `metrics` facade has one global recorder; several apps in one test process share it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, which this crate never does.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// Kafka → emit latency percentiles since start, from the histogram `/metrics` exports:
/// each is the upper bound of the bucket the percentile falls in (so "≤ this"), in ms.
/// Computed only when asked (the stats endpoint), never per event.
pub(crate) fn kafka_to_emit_percentiles() -> Option<[f64; 4]> {
    let text = render();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("realtime_kafka_to_emit_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"} ") else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((le, count.trim().parse().ok()?));
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let at = |q: f64| {
        let bound = buckets.iter().find(|(_, c)| *c >= q * total).map_or(f64::INFINITY, |(le, _)| *le);
        bound * 1000.0
    };
    Some([at(0.5), at(0.9), at(0.99), total])
}

/// The metrics in Prometheus text format.
pub(crate) fn render() -> String {
    handle().render()
}

/// Drains histogram buffers; the exporter's own listener would do this, we serve /metrics
/// ourselves so the app calls it periodically.
pub fn upkeep() {
    handle().run_upkeep();
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("realtime_kafka_records_consumed_total", "Kafka records received, by topic.");
    describe_counter!(
        "realtime_kafka_records_invalid_total",
        "Records that were not valid events, by topic."
    );
    describe_counter!(
        "realtime_kafka_records_dead_lettered_total",
        "Records copied to the dead-letter topic, by source topic."
    );
    describe_counter!(
        "realtime_kafka_dead_letter_failures_total",
        "Failed dead-letter produce attempts (retried)."
    );
    describe_gauge!("realtime_kafka_consumer_lag", "Records behind the end of each assigned partition.");
    describe_counter!("realtime_events_consumed_total", "Events parsed from Kafka, by type.");
    describe_counter!("realtime_events_emitted_total", "Room emits, by socket event name.");
    describe_counter!("realtime_emit_errors_total", "Room emits that at least one socket missed.");
    describe_counter!("realtime_emit_dropped_total", "Socket deliveries dropped (buffer full or closing).");
    describe_histogram!(
        "realtime_kafka_to_emit_seconds",
        metrics::Unit::Seconds,
        "Kafka record timestamp to emit."
    );
    describe_gauge!("realtime_sockets_connected", "Sockets connected to this node.");
    describe_counter!("realtime_socket_connects_total", "Sockets connected since start.");
    describe_counter!("realtime_socket_disconnects_total", "Socket disconnections, by reason.");
    describe_counter!("realtime_auth_failures_total", "Handshakes refused.");
    describe_counter!(
        "realtime_replays_total",
        "Rooms resumed on reconnect, by whether recovery was complete."
    );
    describe_counter!("realtime_rest_broadcasts_total", "Events sent through the REST API, by kind.");
    describe_counter!(
        "realtime_limit_refusals_total",
        "Handshakes or client events refused by a limit, by limit."
    );
    describe_counter!(
        "realtime_product_states_evicted_total",
        "Latest product states dropped by the state store's bounds (least recently updated first)."
    );
    describe_counter!(
        "realtime_slow_disconnects_total",
        "Sockets disconnected because they could not keep up."
    );
    describe_counter!(
        "realtime_cluster_dropped_total",
        "Broadcasts from other nodes dropped because this node fell behind on Redis."
    );
    describe_counter!(
        "realtime_cluster_emit_retries_total",
        "Room emits retried because Redis did not take the broadcast."
    );
    describe_counter!(
        "realtime_task_failures_total",
        "Long-lived tasks that panicked or ended unexpectedly, by task."
    );
    describe_counter!(
        "realtime_record_panics_total",
        "Records whose handling panicked (a bug); each was dead-lettered."
    );
    describe_counter!("realtime_http_requests_total", "HTTP requests, by method, route and status.");
    describe_counter!(
        "realtime_records_decoded_total",
        "Records decoded, by wire format (json, avro, protobuf, json-schema) and envelope."
    );
    describe_counter!(
        "realtime_schema_registry_fetches_total",
        "Schema registry fetches, by outcome (ok, not_found, invalid, unavailable)."
    );
    describe_gauge!("realtime_schema_cache_size", "Schemas held in the registry cache.");
    describe_histogram!(
        "realtime_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request duration."
    );
}

pub(crate) fn record_decoded(format: &'static str, envelope: &'static str) {
    counter!("realtime_records_decoded_total", "format" => format, "envelope" => envelope).increment(1);
}

pub(crate) fn registry_fetch(outcome: &'static str) {
    counter!("realtime_schema_registry_fetches_total", "outcome" => outcome).increment(1);
}

pub(crate) fn schema_cache_size(size: usize) {
    gauge!("realtime_schema_cache_size").set(size as f64);
}

pub(crate) fn records_consumed(topic: &str) {
    counter!("realtime_kafka_records_consumed_total", "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn records_invalid(topic: &str) {
    counter!("realtime_kafka_records_invalid_total", "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn records_dead_lettered(topic: &str) {
    counter!("realtime_kafka_records_dead_lettered_total", "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn dead_letter_failures() {
    counter!("realtime_kafka_dead_letter_failures_total").increment(1);
}

pub(crate) fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!("realtime_kafka_consumer_lag", "topic" => topic.to_owned(), "partition" => partition.to_string()).set(lag as f64);
}

pub(crate) fn consumer_lag_gone(topic: &str, partition: i32) {
    // A revoked partition should not keep reporting its last lag.
    gauge!("realtime_kafka_consumer_lag", "topic" => topic.to_owned(), "partition" => partition.to_string()).set(0.0);
}

pub(crate) fn events_consumed(event_type: &str) {
    counter!("realtime_events_consumed_total", "type" => event_type.to_owned()).increment(1);
}

pub(crate) fn emitted(event: &str, missed: usize) {
    counter!("realtime_events_emitted_total", "event" => event.to_owned()).increment(1);
    if missed > 0 {
        counter!("realtime_emit_errors_total", "event" => event.to_owned()).increment(1);
        counter!("realtime_emit_dropped_total", "event" => event.to_owned()).increment(missed as u64);
    }
}

pub(crate) fn kafka_to_emit(latency: Duration) {
    histogram!("realtime_kafka_to_emit_seconds").record(latency.as_secs_f64());
}

pub(crate) fn connected() {
    gauge!("realtime_sockets_connected").increment(1.0);
    counter!("realtime_socket_connects_total").increment(1);
}

pub(crate) fn disconnected(reason: &str) {
    gauge!("realtime_sockets_connected").decrement(1.0);
    counter!("realtime_socket_disconnects_total", "reason" => reason.to_owned()).increment(1);
}

pub(crate) fn auth_failures() {
    counter!("realtime_auth_failures_total").increment(1);
}

pub(crate) fn replays(recovered: bool) {
    counter!("realtime_replays_total", "recovered" => if recovered { "true" } else { "false" }).increment(1);
}

pub(crate) fn limit_refusals(limit: &'static str) {
    counter!("realtime_limit_refusals_total", "limit" => limit).increment(1);
}

/// Latest product states dropped by the state store's bounds.
pub(crate) fn states_evicted(n: u64) {
    if n > 0 {
        counter!("realtime_product_states_evicted_total").increment(n);
    }
}

pub(crate) fn slow_disconnects() {
    counter!("realtime_slow_disconnects_total").increment(1);
}

pub(crate) fn rest_broadcasts(kind: &'static str) {
    counter!("realtime_rest_broadcasts_total", "kind" => kind).increment(1);
}

pub(crate) fn task_failures(task: &'static str) {
    counter!("realtime_task_failures_total", "task" => task).increment(1);
}

pub(crate) fn record_panics() {
    counter!("realtime_record_panics_total").increment(1);
}

pub(crate) fn cluster_dropped() {
    counter!("realtime_cluster_dropped_total").increment(1);
}

pub(crate) fn cluster_emit_retries() {
    counter!("realtime_cluster_emit_retries_total").increment(1);
}

/// Axum middleware: counts every request by method, matched route (never the raw path,
/// which would let clients create unbounded label values) and status.
pub(crate) async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("realtime_http_request_duration_seconds", "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("realtime_http_requests_total", "method" => method, "route" => route, "status" => status).increment(1);
    response
}

/// The method as a label: the standard ones by name, anything else (a client can send any
/// token as a method) as `other`, so outsiders cannot create new series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
        for m in ["FOO", "get", "XYZZY123"] {
            assert_eq!(method_label(&axum::http::Method::from_bytes(m.as_bytes()).unwrap()), "other");
        }
    }
}
