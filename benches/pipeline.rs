//! Ingest without sockets: a Kafka record value → typed event → routes (envelopes), the
//! work the consumer does per record before anything is emitted.
//! Run: `cargo bench --bench pipeline` (throughput is printed as elements/s = records/s).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use realtime_bridge::events::{Event, Source};
use realtime_bridge::routing::{RoutingRules, route};
use std::hint::black_box;

const ORDER: &[u8] = br#"{"orderId":"1042","buyerId":"u-42","status":"shipped","previousStatus":"paid","totalAmount":57.5,"updatedAt":"2026-11-22T15:04:05Z"}"#;
const INVENTORY: &[u8] =
    br#"{"productId":"p-100","sku":"CUP-ESP","productName":"Espresso cup","stock":0,"previousStock":4,"updatedAt":"2026-11-22T15:04:05Z"}"#;

fn pipeline(topic: &str, value: &[u8], offset: i64) -> usize {
    let event = Event::parse(topic, Some(value)).expect("a valid event");
    let source = Source::kafka(topic, 0, offset, Some(1_763_823_845_000));
    route(&event, &source, RoutingRules { low_stock_threshold: 5 }).len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse+route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("order.updated (2 routes)", |b| {
        let mut offset = 0;
        b.iter(|| {
            offset += 1;
            black_box(pipeline("order.updated", black_box(ORDER), offset))
        })
    });
    g.bench_function("inventory.updated with alert (2 routes)", |b| {
        let mut offset = 0;
        b.iter(|| {
            offset += 1;
            black_box(pipeline("inventory.updated", black_box(INVENTORY), offset))
        })
    });
    g.bench_function("garbage (rejected)", |b| {
        b.iter(|| black_box(Event::parse("order.updated", Some(black_box(b"{ not json"))).is_err()))
    });
    g.finish();
}

/// The decoding stage per record format: the same order as the bridge's JSON, as Avro and as
/// Protobuf in the Confluent wire format (schemas already fetched, as the consumer has them).
fn decode(c: &mut Criterion) {
    use realtime_bridge::decode::confluent::Kind;
    use realtime_bridge::decode::{Decoder, Input, Schema, Schemas, registry::Registry};
    use std::sync::Arc;
    let avro = r#"{"type":"record","name":"Order","fields":[{"name":"orderId","type":"string"},{"name":"buyerId","type":"string"},
        {"name":"status","type":"string"},{"name":"previousStatus","type":"string"},{"name":"totalAmount","type":"double"},{"name":"updatedAt","type":"string"}]}"#;
    let proto = "syntax = \"proto3\"; message Order { string orderId = 1; string buyerId = 2; string status = 3; string previousStatus = 4; double totalAmount = 5; string updatedAt = 6; }";
    let schemas = Schemas(
        [
            (1, Arc::new(Schema::compile(1, Kind::Avro, avro, &[]))),
            (2, Arc::new(Schema::compile(2, Kind::Protobuf, proto, &[]))),
        ]
        .into_iter()
        .collect(),
    );
    let config = realtime_bridge::config::RegistryConfig {
        url: "http://127.0.0.1:9".into(),
        username: None,
        password: None,
        token: None,
        ca_file: None,
        cache_size: 10,
    };
    let decoder = Decoder::new(
        realtime_bridge::mapping::Mapping::built_in(),
        Some(Arc::new(Registry::new(&config).unwrap())),
    );
    let string = |s: &str| {
        let mut out = vec![(s.len() as u8) << 1];
        out.extend_from_slice(s.as_bytes());
        out
    };
    // The order of ORDER, Avro-encoded (strings: zig-zag length, bytes; a double: 8 bytes LE).
    let mut avro_value = vec![0, 0, 0, 0, 1];
    for s in ["1042", "u-42", "shipped", "paid"] {
        avro_value.extend(string(s));
    }
    avro_value.extend(57.5f64.to_le_bytes());
    avro_value.extend(string("2026-11-22T15:04:05Z"));
    // And Protobuf-encoded (index [0], then fields 1–6).
    let mut proto_value = vec![0, 0, 0, 0, 2, 0];
    for (field, s) in [(1u8, "1042"), (2, "u-42"), (3, "shipped"), (4, "paid")] {
        proto_value.extend([field << 3 | 2, s.len() as u8]);
        proto_value.extend_from_slice(s.as_bytes());
    }
    proto_value.push(5 << 3 | 1);
    proto_value.extend(57.5f64.to_le_bytes());
    proto_value.extend([6 << 3 | 2, 20]);
    proto_value.extend_from_slice(b"2026-11-22T15:04:05Z");
    let mut g = c.benchmark_group("decode+map+typed");
    g.throughput(Throughput::Elements(1));
    for (name, value) in [("json", ORDER), ("avro", &avro_value[..]), ("protobuf", &proto_value[..])] {
        let input = Input {
            topic: "order.updated",
            key: None,
            headers: &[],
            payload: Some(value),
        };
        assert!(decoder.event(&input, &schemas).is_ok(), "{name}");
        g.bench_function(name, |b| b.iter(|| black_box(decoder.event(black_box(&input), &schemas).is_ok())));
    }
    g.finish();
}

criterion_group!(benches, bench, decode);
criterion_main!(benches);
