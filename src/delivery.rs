//! The one place every event goes through on its way to sockets: parse, route, emit.
//!
//! Kafka records enter here; so will REST broadcasts. The caller stores the Kafka offset
//! only after [`Delivery::handle_record`] returns, which gives at-least-once delivery.

use std::sync::Arc;

use socketioxide::SocketIo;

use crate::events::{Event, Source};
use crate::health::Stats;
use crate::routing::{Route, RoutingRules, route};

/// A Kafka record as the pipeline needs it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Record timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The value.
    pub payload: Option<&'a [u8]>,
}

/// Parses, routes and emits.
#[derive(Clone)]
pub struct Delivery {
    io: SocketIo,
    rules: RoutingRules,
    stats: Arc<Stats>,
}

impl Delivery {
    /// A pipeline emitting through `io`.
    pub fn new(io: SocketIo, rules: RoutingRules, stats: Arc<Stats>) -> Self {
        Delivery { io, rules, stats }
    }

    /// Handles one record. Never fails: a record that is not a valid event is logged with
    /// its coordinates and skipped, so one bad record cannot stall its partition.
    pub async fn handle_record(&self, rec: Record<'_>) {
        Stats::incr(&self.stats.records_consumed);
        match Event::parse(rec.topic, rec.payload) {
            Ok(event) => {
                let source = Source::kafka(rec.topic, rec.partition, rec.offset, rec.timestamp_ms);
                self.deliver(route(&event, &source, self.rules)).await;
            }
            Err(error) => {
                Stats::incr(&self.stats.records_invalid);
                tracing::warn!(topic = rec.topic, partition = rec.partition, offset = rec.offset, %error, "skipping record that is not a valid event");
            }
        }
    }

    /// Emits each route to its room, in order. A socket whose buffer is full misses the
    /// event (socketioxide refuses rather than waits); the others still receive it.
    pub async fn deliver(&self, routes: Vec<Route>) {
        for r in routes {
            Stats::incr(&self.stats.emits);
            if let Err(error) = self.io.to(r.room.clone()).emit(&r.event, &r.envelope).await {
                Stats::incr(&self.stats.emit_failures);
                tracing::warn!(room = %r.room, event = %r.event, id = %r.envelope.id, %error, "emit failed for some sockets");
            }
        }
    }
}
