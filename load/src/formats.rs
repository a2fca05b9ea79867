//! `ingest --format avro|protobuf`: the ingest records in the Confluent wire format, their
//! schema registered in a real registry (`--registry`, e.g. Apicurio's
//! `…/apis/ccompat/v7`), encoded here as a producer's serializer would.

use apache_avro::writer::datum::GenericDatumWriter;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};

/// The record format of an ingest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The bridge's own JSON.
    Json,
    /// Avro through the registry.
    Avro,
    /// Protobuf through the registry.
    Protobuf,
}

const AVRO: &str = r#"{"type":"record","name":"Order","namespace":"load","fields":[
  {"name":"orderId","type":"string"},{"name":"buyerId","type":"string"},
  {"name":"status","type":"string"},{"name":"previousStatus","type":"string"}]}"#;
const PROTO: &str = r#"syntax = "proto3"; package load;
message Order { string orderId = 1; string buyerId = 2; string status = 3; string previousStatus = 4; }"#;

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro => "avro",
            Format::Protobuf => "protobuf",
        }
    }
}

/// Encodes the ingest scenario's orders.
pub enum Encoder {
    /// JSON text.
    Json,
    /// Magic, schema id, Avro body.
    Avro { id: u32, schema: apache_avro::Schema },
    /// Magic, schema id, index 0, Protobuf body.
    Protobuf { id: u32, message: MessageDescriptor },
}

impl Encoder {
    /// Registers the format's schema under `<topic>-<format>-value` in `registry` (none for JSON).
    pub async fn new(format: Format, registry: Option<&str>, topic: &str) -> anyhow::Result<Encoder> {
        if format == Format::Json {
            return Ok(Encoder::Json);
        }
        let registry = registry
            .ok_or_else(|| anyhow::anyhow!("--format {format:?} needs --registry URL (a schema registry's Confluent-compatible API)"))?;
        let body = match format {
            Format::Avro => serde_json::json!({"schema": AVRO}),
            _ => serde_json::json!({"schema": PROTO, "schemaType": "PROTOBUF"}),
        };
        let answer: serde_json::Value = reqwest::Client::new()
            // A subject per format: a registry types a subject by its first schema.
            .post(format!(
                "{}/subjects/{topic}-{}-value/versions",
                registry.trim_end_matches('/'),
                format.name()
            ))
            .timeout(std::time::Duration::from_secs(30))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = answer["id"].as_u64().ok_or_else(|| anyhow::anyhow!("registry answered {answer}"))? as u32;
        Ok(match format {
            Format::Avro => Encoder::Avro {
                id,
                schema: apache_avro::Schema::parse_str(AVRO)?,
            },
            _ => {
                let mut compiler = protox::Compiler::with_file_resolver(Single(PROTO));
                compiler.open_file("order.proto").map_err(|e| anyhow::anyhow!("{e}"))?;
                let message = compiler
                    .descriptor_pool()
                    .get_message_by_name("load.Order")
                    .ok_or_else(|| anyhow::anyhow!("no load.Order"))?;
                Encoder::Protobuf { id, message }
            }
        })
    }

    /// One order's value bytes.
    pub fn encode(&self, order: &[(&str, String)]) -> Vec<u8> {
        match self {
            Encoder::Json => serde_json::Value::Object(order.iter().map(|(k, v)| ((*k).to_owned(), v.clone().into())).collect())
                .to_string()
                .into_bytes(),
            Encoder::Avro { id, schema } => {
                let value = apache_avro::types::Value::Record(
                    order
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), apache_avro::types::Value::String(v.clone())))
                        .collect(),
                );
                let mut out = framed(*id);
                let body = GenericDatumWriter::builder(schema)
                    .build()
                    .and_then(|w| w.write_value_to_vec(value))
                    .expect("the order matches its schema");
                out.extend(body);
                out
            }
            Encoder::Protobuf { id, message } => {
                let mut m = DynamicMessage::new(message.clone());
                for (k, v) in order {
                    m.set_field_by_name(k, prost_reflect::Value::String(v.clone()));
                }
                let mut out = framed(*id);
                out.push(0); // message indexes [0]
                out.extend(m.encode_to_vec());
                out
            }
        }
    }
}

fn framed(id: u32) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out
}

/// One in-memory `.proto` file for protox.
struct Single(&'static str);

impl protox::file::FileResolver for Single {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        protox::file::File::from_source(name, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_bridges_own() {
        let bytes = Encoder::Json.encode(&[("orderId", "L1".into()), ("buyerId", "u1".into())]);
        assert_eq!(String::from_utf8(bytes).unwrap(), r#"{"buyerId":"u1","orderId":"L1"}"#);
    }

    #[test]
    fn avro_and_protobuf_are_framed_and_decodable() {
        let order = [
            ("orderId", "L1".to_owned()),
            ("buyerId", "u1".into()),
            ("status", "paid".into()),
            ("previousStatus", "new".into()),
        ];
        let avro = Encoder::Avro {
            id: 7,
            schema: apache_avro::Schema::parse_str(AVRO).unwrap(),
        };
        let bytes = avro.encode(&order);
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        let schema = realtime_bridge::decode::Schema::compile(7, realtime_bridge::decode::confluent::Kind::Avro, AVRO, &[]).unwrap();
        let (value, _) = realtime_bridge::decode::confluent::decode_body(7, &schema, &bytes[5..]).unwrap();
        assert_eq!(value["buyerId"], "u1");
        let proto = realtime_bridge::decode::Schema::compile(8, realtime_bridge::decode::confluent::Kind::Protobuf, PROTO, &[]).unwrap();
        let realtime_bridge::decode::Schema::Protobuf { pool, .. } = &proto else {
            panic!()
        };
        let encoder = Encoder::Protobuf {
            id: 8,
            message: pool.get_message_by_name("load.Order").unwrap(),
        };
        let bytes = encoder.encode(&order);
        let (value, _) = realtime_bridge::decode::confluent::decode_body(8, &proto, &bytes[5..]).unwrap();
        assert_eq!(value["status"], "paid");
    }
}
