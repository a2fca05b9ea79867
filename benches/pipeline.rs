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

criterion_group!(benches, bench);
criterion_main!(benches);
