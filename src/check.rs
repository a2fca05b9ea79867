//! `realtime-bridge check-mapping`: what a mapping file makes of a record, before it is
//! deployed — the event type and the data clients would receive, or the dead-letter reason.

use std::sync::Arc;

use crate::decode::registry::Registry;
use crate::decode::{Decoder, Input, Schemas};
use crate::mapping::Mapping;

/// A record to try, as the command line gives it.
pub struct TryRecord {
    /// The topic it is produced to.
    pub topic: String,
    /// Its key.
    pub key: Option<String>,
    /// Its headers (`NAME=VALUE`, split).
    pub headers: Vec<(String, String)>,
    /// Its value's bytes (a JSON file, or the Confluent wire format as written).
    pub value: Vec<u8>,
}

/// The mapping file checked, and the record tried when given: the text to print, and
/// whether the record is an event (`true` when none was given).
pub async fn check(file: &str, record: Option<TryRecord>, registry: Option<Registry>) -> anyhow::Result<(String, bool)> {
    let mapping = Mapping::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = format!(
        "{file}: {} source(s); consumed besides KAFKA_TOPICS: {:?}\n",
        mapping.file_sources(),
        mapping.subscriptions()
    );
    let Some(record) = record else {
        return Ok((out, true));
    };
    // As the service bounds it by KAFKA_MAX_RECORD_BYTES: nothing in a record claims more.
    crate::decode::confluent::limit_allocations(record.value.len().max(1024));
    let decoder = Decoder::new(mapping, registry.map(Arc::new));
    let headers: Vec<(&str, &[u8])> = record.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    let input = Input {
        topic: &record.topic,
        key: record.key.as_deref().map(str::as_bytes),
        headers: &headers,
        payload: Some(&record.value),
    };
    let schemas = match (decoder.registry(), crate::decode::schema_id(&input)) {
        (Some(registry), Some(id)) => {
            let fetched = registry
                .fetch(id)
                .await
                .map_err(|e| anyhow::anyhow!("schema registry unavailable: {e}"))?;
            Schemas([(id, Arc::new(fetched))].into_iter().collect())
        }
        _ => Schemas::default(),
    };
    match decoder.event(&input, &schemas) {
        Ok((event, format, envelope)) => {
            let line = match decoder.mapping().source_line(&record.topic) {
                Some(0) | None => "the built-in source".to_owned(),
                Some(line) => format!("the source at line {line}"),
            };
            out.push_str(&format!(
                "event {} (format {}, envelope {}, by {line})\n{}\n",
                event.event_type(),
                format.as_str(),
                envelope.as_str(),
                serde_json::to_string_pretty(&event.data())?
            ));
            Ok((out, true))
        }
        Err(reason) => {
            out.push_str(&format!("not an event (dead-lettered with dlq.error): {reason}\n"));
            Ok((out, false))
        }
    }
}
