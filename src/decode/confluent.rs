//! The Confluent wire format: byte 0 = 0 (magic), bytes 1–4 = the schema id (big-endian),
//! then the body — Avro binary, Protobuf (after the message-index path) or JSON text — read
//! with the schema the registry holds for that id.

use std::collections::HashMap;
use std::path::Path;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use super::{DecodeError, Format};
use crate::events::bounded_error;

/// Nested message indexes a Protobuf value may name (a deeper path is refused).
const MAX_MESSAGE_INDEXES: u64 = 32;

/// The schema id of a value in the Confluent wire format (`None`: not that format). JSON
/// text never starts with a zero byte, so the two are told apart by the first byte.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// What the registry says a schema is (`schemaType`; absent = Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Avro.
    Avro,
    /// Protobuf.
    Protobuf,
    /// JSON Schema.
    Json,
}

impl Kind {
    /// From the registry's `schemaType`.
    pub fn of(schema_type: Option<&str>) -> Result<Kind, String> {
        match schema_type {
            None | Some("AVRO") => Ok(Kind::Avro),
            Some("PROTOBUF") => Ok(Kind::Protobuf),
            Some("JSON") => Ok(Kind::Json),
            Some(other) => Err(format!("schemaType {other:?} is not AVRO, PROTOBUF or JSON")),
        }
    }
}

/// A schema ready to decode with.
pub enum Schema {
    /// An Avro schema and the named types it references.
    Avro {
        /// The writer's schema.
        schema: apache_avro::Schema,
        /// The referenced schemas, in dependency order.
        references: Vec<apache_avro::Schema>,
        /// Every named type, resolved once here: what turning a value into JSON looks
        /// references up in (the reader resolves its own borrowed copy per record).
        names: apache_avro::schema::Names,
    },
    /// A Protobuf file (and its imports) compiled to descriptors.
    Protobuf {
        /// Every file.
        pool: DescriptorPool,
        /// The schema's own file.
        file: String,
    },
    /// A JSON Schema: the body is JSON text, which the typed event checks.
    Json,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schema::Avro { schema, .. } => write!(f, "Avro({})", schema.name().map_or("-".to_owned(), |n| n.fullname(None))),
            Schema::Protobuf { file, .. } => write!(f, "Protobuf({file})"),
            Schema::Json => write!(f, "Json"),
        }
    }
}

impl Schema {
    /// Compiles a schema's text with its references (`(name, kind, text)`, dependencies
    /// before what needs them).
    pub fn compile(id: u32, kind: Kind, text: &str, references: &[(String, String)]) -> Result<Schema, String> {
        match kind {
            Kind::Avro => {
                let (schema, references) = apache_avro::Schema::parse_str_with_list(text, references.iter().map(|(_, t)| t.as_str()))
                    .map_err(|e| format!("not a valid Avro schema: {e}"))?;
                // Resolving here also proves every named type is there.
                let mut all: Vec<&apache_avro::Schema> = references.iter().collect();
                all.push(&schema);
                let resolved = ResolvedSchema::new_with_schemata(all).map_err(|e| format!("Avro schema does not resolve: {e}"))?;
                let names = resolved.get_names().iter().map(|(n, s)| (n.clone(), (*s).clone())).collect();
                Ok(Schema::Avro { schema, references, names })
            }
            Kind::Protobuf => {
                let file = format!("registry-schema-{id}.proto");
                let mut files: HashMap<String, String> = references.iter().cloned().collect();
                files.insert(file.clone(), text.to_owned());
                let files = Files(files);
                let mut chain = ChainFileResolver::new();
                chain.add(files);
                chain.add(GoogleFileResolver::new());
                let mut compiler = protox::Compiler::with_file_resolver(chain);
                compiler.include_imports(true);
                compiler.open_file(&file).map_err(|e| format!("not a valid Protobuf schema: {e}"))?;
                Ok(Schema::Protobuf {
                    pool: compiler.descriptor_pool(),
                    file,
                })
            }
            Kind::Json => Ok(Schema::Json),
        }
    }
}

/// The registry's texts as protox files, by their import name: `.proto` source, or a
/// base64 `FileDescriptorProto` (what confluent-kafka's Python `ProtobufSerializer`
/// registers).
struct Files(HashMap<String, String>);

impl FileResolver for Files {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        path.to_str().filter(|p| self.0.contains_key(*p)).map(str::to_owned)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(text) => match descriptor_of(text) {
                Some(mut proto) => {
                    // Imported by the name the registry gives it, whatever the producer called it.
                    proto.name = Some(name.to_owned());
                    Ok(File::from_file_descriptor_proto(proto))
                }
                None => File::from_source(name, text),
            },
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A base64 `FileDescriptorProto`, when `text` is one (`.proto` source never is: it has
/// blanks and punctuation base64 has not).
fn descriptor_of(text: &str) -> Option<prost_reflect::prost_types::FileDescriptorProto> {
    use base64::Engine as _;
    use prost::Message as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
    prost_reflect::prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()
}

/// Bounds what one Avro body may make the decoder allocate, from the record size limit
/// (`record_bytes`): 64 × that, room for every honest value (a value in memory is at most 64
/// bytes for each byte it takes on the wire, but for `null`s and empty records, which take
/// none). Without it a corrupt body of a few bytes can claim millions of array items of
/// `null` and apache-avro's default bound (512 MiB of values) lets it allocate hundreds of
/// megabytes and fill them. Process wide and set once: the first call (or the first decode,
/// which fixes the default) wins — `app` calls it before the consumer starts.
pub fn limit_allocations(record_bytes: usize) {
    apache_avro::util::max_allocation_bytes(record_bytes.saturating_mul(64));
}

/// Decodes a body (the bytes after the schema id) with its schema.
pub fn decode_body(id: u32, schema: &Schema, body: &[u8]) -> Result<(Value, Format), DecodeError> {
    match schema {
        Schema::Avro { schema, references, names } => {
            avro(schema, references, names, body)
                .map(|v| (v, Format::Avro))
                .map_err(|reason| DecodeError::Body {
                    format: "avro",
                    id,
                    reason,
                })
        }
        Schema::Protobuf { pool, file } => protobuf(pool, file, body)
            .map(|v| (v, Format::Protobuf))
            .map_err(|reason| DecodeError::Body {
                format: "protobuf",
                id,
                reason,
            }),
        Schema::Json => serde_json::from_slice(body)
            .map(|v| (v, Format::JsonSchema))
            .map_err(|e| DecodeError::Body {
                format: "json-schema",
                id,
                reason: bounded_error(e.to_string()),
            }),
    }
}

fn avro(
    schema: &apache_avro::Schema,
    references: &[apache_avro::Schema],
    names: &apache_avro::schema::Names,
    body: &[u8],
) -> Result<Value, String> {
    let mut all: Vec<&apache_avro::Schema> = references.iter().collect();
    all.push(schema);
    let resolved = ResolvedSchema::new_with_schemata(all).map_err(|e| e.to_string())?;
    let reader = GenericDatumReader::builder(schema)
        .resolved_writer_schemata(resolved)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rest = body;
    let value = reader.read_value(&mut rest).map_err(|e| bounded_error(e.to_string()))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the value", rest.len()));
    }
    Ok(super::avro::to_json(value, schema, names))
}

fn protobuf(pool: &DescriptorPool, file: &str, body: &[u8]) -> Result<Value, String> {
    let mut rest = body;
    let indexed = message_at(pool, file, &mut rest).and_then(|m| DynamicMessage::decode(m, rest).map_err(|e| bounded_error(e.to_string())));
    let decoded = match indexed {
        Ok(decoded) => decoded,
        // @kafkajs/confluent-schema-registry writes no message-index path: the body follows
        // the schema id at once. When the path read does not lead to a message that decodes,
        // the whole body is read as the file's first message (what that library encodes).
        Err(reason) => pool
            .get_file_by_name(file)
            .and_then(|f| f.messages().next())
            .and_then(|first| DynamicMessage::decode(first, body).ok())
            .ok_or(reason)?,
    };
    // Numbers as numbers (int64 too: stock is one), and every field, zeros included (a
    // proto3 stock of 0 is not written on the wire but is still the stock).
    let options = SerializeOptions::new().stringify_64_bit_integers(false).skip_default_fields(false);
    decoded
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| bounded_error(e.to_string()))
}

/// The message the index path names: zig-zag varints, a count then indexes (a count of 0
/// is the first message of the file).
fn message_at(pool: &DescriptorPool, file: &str, rest: &mut &[u8]) -> Result<MessageDescriptor, String> {
    let varint = |rest: &mut &[u8]| -> Result<u64, String> {
        let raw = prost::encoding::decode_varint(rest).map_err(|e| format!("message indexes: {e}"))?;
        Ok((raw >> 1) ^ (raw & 1).wrapping_neg())
    };
    let count = varint(rest)?;
    if count > MAX_MESSAGE_INDEXES {
        return Err(format!("message indexes: {count} is over {MAX_MESSAGE_INDEXES}"));
    }
    let indexes = if count == 0 {
        vec![0]
    } else {
        (0..count).map(|_| varint(rest)).collect::<Result<Vec<_>, _>>()?
    };
    let file = pool.get_file_by_name(file).ok_or("the schema's file is not compiled")?;
    let missing = || format!("message indexes {indexes:?} name no message of the schema");
    let mut message = file.messages().nth(indexes[0] as usize).ok_or_else(missing)?;
    for i in &indexes[1..] {
        let child = message.child_messages().nth(*i as usize);
        message = child.ok_or_else(missing)?;
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use serde_json::json;

    #[test]
    fn the_magic_byte_and_the_id() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Some(258));
        assert_eq!(schema_id(&[0, 0, 0, 1]), None);
        assert_eq!(schema_id(b"{\"a\":1}"), None);
    }

    const PROTO: &str = r#"
        syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        message Envelope { message Order { string order_id = 1; int64 buyer_id = 2; string status = 3; int64 stock = 4;
            google.protobuf.Timestamp updated_at = 5; } }
        message Other { string x = 1; }
    "#;

    #[test]
    fn protobuf_by_its_message_indexes() {
        let schema = Schema::compile(3, Kind::Protobuf, PROTO, &[]).unwrap();
        let Schema::Protobuf { pool, .. } = &schema else { panic!() };
        let order = pool.get_message_by_name("shop.Envelope.Order").unwrap();
        let mut message = DynamicMessage::new(order);
        message.set_field_by_name("order_id", prost_reflect::Value::String("o-1".into()));
        message.set_field_by_name("buyer_id", prost_reflect::Value::I64(42));
        // Indexes [0, 0] (zig-zag: count 2 → 4, then 0, 0): Envelope.Order.
        let mut body = vec![4, 0, 0];
        body.extend(message.encode_to_vec());
        let (value, format) = decode_body(3, &schema, &body).unwrap();
        assert_eq!(format, Format::Protobuf);
        assert_eq!(value["orderId"], json!("o-1"));
        assert_eq!(value["buyerId"], json!(42));
        assert_eq!(value["stock"], json!(0));
        // Index [1] (count 1 → 2, then 1 → 2): Other; [7] names nothing.
        assert!(decode_body(3, &schema, &[2, 2]).unwrap().0.get("x").is_some());
        assert!(matches!(
            decode_body(3, &schema, &[2, 14]),
            Err(DecodeError::Body { format: "protobuf", .. })
        ));
        assert!(decode_body(3, &schema, &[0xff]).is_err());
        assert!(Schema::compile(3, Kind::Protobuf, "syntax = \"proto3\"; message {", &[]).is_err());
    }

    #[test]
    fn protobuf_as_a_base64_descriptor() {
        // What confluent-kafka's Python ProtobufSerializer registered in Apicurio 3.3.3
        // (shop/order.proto: Order {orderId, buyerId, updatedAt: Timestamp}).
        let registered = "ChBzaG9wL29yZGVyLnByb3RvEgRzaG9wGh9nb29nbGUvcHJvdG9idWYvdGltZXN0YW1wLnByb3RvIlgKBU9yZGVyEg8KB29yZGVySWQYASABKAkSDwoHYnV5ZXJJZBgCIAEoCRItCgl1cGRhdGVkQXQYAyABKAsyGi5nb29nbGUucHJvdG9idWYuVGltZXN0YW1wYgZwcm90bzM=";
        let schema = Schema::compile(1, Kind::Protobuf, registered, &[]).unwrap();
        // Its serializer's body for {o1, u1, 2026-11-22T15:04:05Z}, after the schema id.
        let body = [
            0x00, 0x0a, 0x02, 0x6f, 0x31, 0x12, 0x02, 0x75, 0x31, 0x1a, 0x06, 0x08, 0xe5, 0x88, 0x8c, 0xd8, 0x06,
        ];
        let (value, _) = decode_body(1, &schema, &body).unwrap();
        assert_eq!(
            value,
            json!({"orderId": "o1", "buyerId": "u1", "updatedAt": "2026-11-22T15:04:05Z"})
        );
    }

    #[test]
    fn avro_with_a_reference() {
        let customer = r#"{"type":"record","name":"Customer","namespace":"shop","fields":[{"name":"id","type":"long"}]}"#;
        let order = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"orderId","type":"string"},{"name":"customer","type":"shop.Customer"}]}"#;
        let schema = Schema::compile(5, Kind::Avro, order, &[("shop.Customer".into(), customer.into())]).unwrap();
        // "o-1" (len 3 → zig-zag 6), then the long 42 (→ 84).
        let body = [6, b'o', b'-', b'1', 84];
        let (value, _) = decode_body(5, &schema, &body).unwrap();
        assert_eq!(value, json!({"orderId": "o-1", "customer": {"id": 42}}));
        assert!(matches!(
            decode_body(5, &schema, &[6, b'o']),
            Err(DecodeError::Body { format: "avro", .. })
        ));
        assert!(decode_body(5, &schema, &[6, b'o', b'-', b'1', 84, 0]).is_err());
        assert!(Schema::compile(5, Kind::Avro, order, &[]).is_err());
    }
}
