//! The Avro allocation bound, alone in its process: apache-avro keeps it in a process-wide
//! cell that the first decode fixes (to its 512 MiB default when unset), so a test beside
//! other decoding tests could not be sure its bound is the one in force — as the service is,
//! where `app` sets it before the consumer decodes anything.

use realtime_bridge::decode::confluent::{Kind, decode_body, limit_allocations};
use realtime_bridge::decode::{DecodeError, Schema};

#[test]
fn a_body_claiming_millions_of_items_is_refused_without_allocating_them() {
    limit_allocations(256 * 1024);
    let schema = Schema::compile(6, Kind::Avro, r#"{"type":"array","items":"null"}"#, &[]).unwrap();
    // A block of 4 000 000 nulls (zig-zag varint), then the end: 5 bytes claiming 4 million
    // items (≈ 200 MB of values, under apache-avro's own 512 MiB bound).
    let mut body = Vec::new();
    let mut n: u64 = 4_000_000 << 1;
    while n >= 0x80 {
        body.push((n as u8) | 0x80);
        n >>= 7;
    }
    body.push(n as u8);
    body.push(0);
    let outcome = decode_body(6, &schema, &body);
    assert!(matches!(outcome, Err(DecodeError::Body { format: "avro", .. })), "{outcome:?}");
    // An honest array within the bound still decodes: 6 000 ints in a 12 KB body.
    let ints = Schema::compile(7, Kind::Avro, r#"{"type":"array","items":"int"}"#, &[]).unwrap();
    let mut honest = vec![0xE0, 0x5D]; // 6 000, zig-zag
    honest.extend(std::iter::repeat_n(2u8, 6_000)); // the int 1, 6 000 times
    honest.push(0);
    let (value, _) = decode_body(7, &ints, &honest).unwrap();
    assert_eq!(value.as_array().map(Vec::len), Some(6_000));
}
