//! `GET /realtime/stats`: what this node, and the cluster, is doing, for operators.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::HttpState;
use super::auth::Operator;
use super::error::{ApiError, ErrorBody};
use crate::routing::USER_ROOM_PREFIX;
use crate::stats::{EventCounts, TopicCounts, Totals};

/// Query of `GET /realtime/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How many of the busiest rooms to list (1–1000, default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub top: Option<u16>,
}

/// The query string, with a JSON 400 when it does not parse.
pub struct StatsParams(pub StatsQuery);

impl<S: Send + Sync> FromRequestParts<S> for StatsParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<StatsQuery>::try_from_uri(&parts.uri).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        if q.top.is_some_and(|t| !(1..=1000).contains(&t)) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "top must be within 1..=1000"));
        }
        Ok(StatsParams(q))
    }
}

/// The stats body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    /// The service version.
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Sockets connected to this node.
    pub connections: usize,
    /// Distinct users with at least one socket on this node.
    pub distinct_users: usize,
    /// Rooms with at least one socket on this node.
    pub rooms_total: usize,
    /// The busiest rooms, most sockets first.
    pub rooms: Vec<RoomSockets>,
    /// Totals since start.
    pub totals: Totals,
    /// Per Kafka topic: consumed, invalid, dead-lettered.
    pub topics: BTreeMap<String, TopicCounts>,
    /// Per socket event name: routed, emit failures.
    pub events: BTreeMap<String, EventCounts>,
    /// The consumer's assignment and lag.
    pub kafka: KafkaStats,
    /// Every node's sockets and users (null when the other nodes could not be asked).
    pub cluster: Option<ClusterStats>,
    /// Kafka record timestamp → emit latency on this node since start (null before the first
    /// record).
    pub latency: Option<LatencyStats>,
}

/// Latency percentiles, each the upper bound of its histogram bucket (1, 2.5, 5, 10, 20,
/// 50 ms …), in milliseconds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyStats {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Records measured.
    pub samples: u64,
}

/// Sockets and users over all nodes, through the Socket.IO adapter (with no Redis, this
/// node alone).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStats {
    /// Sockets connected to any node.
    pub connections: usize,
    /// Distinct users with at least one socket on some node.
    pub distinct_users: usize,
    /// Sockets per node, by the adapter's node id (nodes without sockets are not listed).
    pub nodes: Vec<NodeSockets>,
}

/// Sockets on one node.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeSockets {
    /// The node's id in the adapter.
    pub node: String,
    /// Sockets connected to it.
    pub sockets: usize,
}

/// Sockets in one room.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomSockets {
    /// The room.
    pub room: String,
    /// Sockets in it on this node.
    pub sockets: usize,
}

/// The consumer's view of its partitions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaStats {
    /// The consumer group.
    pub group: String,
    /// Assigned partitions with their lag (null until librdkafka has reported it, every 5 s).
    pub assignment: Vec<AssignedPartition>,
}

/// One assigned partition.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records behind the end of the partition.
    pub lag: Option<i64>,
}

/// Connections, rooms, counters, Kafka assignment and lag of this node; sockets and users of the cluster.
#[utoipa::path(
    get, path = "/realtime/stats", tag = "stats",
    params(StatsQuery),
    responses(
        (status = 200, description = "This node's state", body = StatsResponse),
        (status = 400, description = "Bad query string", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 403, description = "Token without the admin role", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])),
)]
pub async fn stats(State(state): State<HttpState>, _operator: Operator, StatsParams(q): StatsParams) -> Json<StatsResponse> {
    let local = state.hub.local();
    let per_room = local.rooms;
    let distinct_users = per_room.keys().filter(|r| r.starts_with(USER_ROOM_PREFIX)).count();
    let rooms_total = per_room.len();
    let mut rooms: Vec<RoomSockets> = per_room.into_iter().map(|(room, sockets)| RoomSockets { room, sockets }).collect();
    rooms.sort_by(|a, b| b.sockets.cmp(&a.sockets).then_with(|| a.room.cmp(&b.room)));
    rooms.truncate(usize::from(q.top.unwrap_or(20)));

    let lag: HashMap<(String, i32), i64> = state.stats.lag().into_iter().map(|l| ((l.topic, l.partition), l.lag)).collect();
    let assignment = state
        .health
        .assignment()
        .into_iter()
        .map(|(topic, partition)| AssignedPartition {
            lag: lag.get(&(topic.clone(), partition)).copied(),
            topic,
            partition,
        })
        .collect();

    let cluster = match state.hub.cluster().await {
        Ok(c) => Some(ClusterStats {
            connections: c.sockets,
            distinct_users: c.users,
            nodes: c.nodes.into_iter().map(|(node, sockets)| NodeSockets { node, sockets }).collect(),
        }),
        Err(error) => {
            tracing::warn!(%error, "cluster stats unavailable");
            None
        }
    };

    Json(StatsResponse {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.health.uptime_secs(),
        connections: local.sockets,
        distinct_users,
        rooms_total,
        rooms,
        totals: state.stats.totals(),
        topics: state.stats.per_topic(),
        events: state.stats.per_event(),
        kafka: KafkaStats {
            group: state.group_id.to_string(),
            assignment,
        },
        cluster,
        latency: crate::metrics::kafka_to_emit_percentiles().map(|[p50_ms, p90_ms, p99_ms, samples]| LatencyStats {
            p50_ms,
            p90_ms,
            p99_ms,
            samples: samples as u64,
        }),
    })
}
