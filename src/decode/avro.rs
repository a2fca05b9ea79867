//! An Avro value as the JSON the typed events read: unions become their value, records
//! objects, enums their symbol; logical types what the events accept — timestamps and dates
//! RFC 3339 text, decimals numbers (scaled by their schema), UUIDs text; bytes base64.

use apache_avro::Schema;
use apache_avro::schema::Names;
use apache_avro::types::Value as Avro;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// `value`, written with `schema` (its named types in `names`), as JSON.
pub fn to_json(value: Avro, schema: &Schema, names: &Names) -> Value {
    // A reference to a named type: the type itself (bounded: names resolve to non-refs).
    let schema = match schema {
        Schema::Ref { name } => names.get(name).unwrap_or(schema),
        other => other,
    };
    match (value, schema) {
        (Avro::Union(i, inner), Schema::Union(union)) => match union.variants().get(i as usize) {
            Some(variant) => to_json(*inner, variant, names),
            None => plain(*inner),
        },
        (Avro::Record(fields), Schema::Record(record)) => Value::Object(
            fields
                .into_iter()
                .map(|(name, v)| {
                    let field_schema = record.lookup.get(&name).and_then(|i| record.fields.get(*i)).map(|f| &f.schema);
                    let json = match field_schema {
                        Some(s) => to_json(v, s, names),
                        None => plain(v),
                    };
                    (name, json)
                })
                .collect(),
        ),
        (Avro::Array(items), Schema::Array(array)) => Value::Array(items.into_iter().map(|v| to_json(v, &array.items, names)).collect()),
        (Avro::Map(entries), Schema::Map(map)) => {
            Value::Object(entries.into_iter().map(|(k, v)| (k, to_json(v, &map.types, names))).collect())
        }
        (Avro::Decimal(d), Schema::Decimal(decimal)) => {
            let unscaled = Vec::<u8>::try_from(&d).map(|b| twos_complement(&b)).unwrap_or(f64::NAN);
            number(unscaled / 10f64.powi(decimal.scale as i32))
        }
        (v, _) => plain(v),
    }
}

/// A value whose schema says nothing more than the value itself.
fn plain(value: Avro) -> Value {
    match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) => Value::from(i),
        Avro::Long(i) => Value::from(i),
        Avro::Float(f) => number(f as f64),
        Avro::Double(f) => number(f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Union(_, inner) => plain(*inner),
        Avro::Array(items) => Value::Array(items.into_iter().map(plain).collect()),
        Avro::Map(entries) => Value::Object(entries.into_iter().map(|(k, v)| (k, plain(v))).collect()),
        Avro::Record(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, plain(v))).collect::<Map<_, _>>()),
        Avro::Date(days) => time(i64::from(days) * 86_400, 0, 10),
        Avro::TimeMillis(ms) => Value::String(time_of_day(i64::from(ms) * 1_000_000)),
        Avro::TimeMicros(us) => Value::String(time_of_day(us.saturating_mul(1_000))),
        Avro::TimestampMillis(ms) => time(ms.div_euclid(1_000), ms.rem_euclid(1_000) * 1_000_000, 24),
        Avro::TimestampMicros(us) => time(us.div_euclid(1_000_000), us.rem_euclid(1_000_000) * 1_000, 27),
        Avro::TimestampNanos(ns) => time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000), 30),
        // Local times carry no zone: the same text without the `Z`.
        Avro::LocalTimestampMillis(ms) => local(time(ms.div_euclid(1_000), ms.rem_euclid(1_000) * 1_000_000, 24)),
        Avro::LocalTimestampMicros(us) => local(time(us.div_euclid(1_000_000), us.rem_euclid(1_000_000) * 1_000, 27)),
        Avro::LocalTimestampNanos(ns) => local(time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000), 30)),
        Avro::Decimal(d) => number(Vec::<u8>::try_from(&d).map(|b| twos_complement(&b)).unwrap_or(f64::NAN)),
        Avro::BigDecimal(d) => d.to_string().parse::<f64>().map_or(Value::Null, number),
        Avro::Uuid(u) => Value::String(u.to_string()),
        Avro::Duration(d) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
    }
}

/// A JSON number, or null for NaN and infinities (JSON has none).
fn number(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A big-endian two's-complement integer (a decimal's unscaled value), as a float.
fn twos_complement(bytes: &[u8]) -> f64 {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let magnitude = bytes
        .iter()
        .fold(0f64, |acc, b| acc * 256.0 + f64::from(if negative { !b } else { *b }));
    if negative { -(magnitude + 1.0) } else { magnitude }
}

/// RFC 3339 UTC text of `secs` + `nanos` since the epoch, cut to `len` characters
/// (10: the date; 24: milliseconds; 27: micro; 30: nano) and closed with `Z`; the number of
/// seconds when it is outside what RFC 3339 can write.
fn time(secs: i64, nanos: i64, len: usize) -> Value {
    let at = u64::try_from(secs)
        .ok()
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(s, nanos as u32)));
    let Some(at) = at.filter(|t| *t <= std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799)) else {
        return Value::from(secs);
    };
    let full = humantime::format_rfc3339_nanos(at).to_string(); // 2026-12-07T10:00:00.123456789Z
    if len == 10 {
        return Value::String(full[..10].to_owned());
    }
    Value::String(format!("{}Z", &full[..(len - 1).min(full.len() - 1)]))
}

fn local(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.trim_end_matches('Z').to_owned()),
        other => other,
    }
}

fn time_of_day(nanos: i64) -> String {
    let n = nanos.rem_euclid(86_400_000_000_000);
    let (s, frac) = (n / 1_000_000_000, n % 1_000_000_000);
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600, s / 60 % 60, s % 60, frac / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn logical_types_become_what_events_accept() {
        assert_eq!(time(1_795_359_845, 123_000_000, 24), json!("2026-11-22T15:04:05.123Z"));
        assert_eq!(time(1_795_359_845, 123_456_000, 27), json!("2026-11-22T15:04:05.123456Z"));
        assert_eq!(time(1_795_359_845, 0, 10), json!("2026-11-22"));
        assert_eq!(time(-1, 0, 24), json!(-1));
        assert_eq!(time(i64::MAX, 0, 24), json!(i64::MAX));
        assert_eq!(twos_complement(&[0x04, 0xD2]), 1234.0);
        assert_eq!(twos_complement(&[0xFB, 0x2E]), -1234.0);
        assert_eq!(twos_complement(&[]), 0.0);
        assert_eq!(time_of_day(3_723_004_000_000), "01:02:03.004");
    }

    #[test]
    fn a_record_with_a_union_and_a_decimal() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"orderId","type":"string"},
                {"name":"totalAmount","type":["null",{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}]},
                {"name":"updatedAt","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        )
        .unwrap();
        let value = Avro::Record(vec![
            ("orderId".into(), Avro::String("o-1".into())),
            (
                "totalAmount".into(),
                Avro::Union(1, Box::new(Avro::Decimal(apache_avro::Decimal::from(vec![0x04, 0xD2])))),
            ),
            ("updatedAt".into(), Avro::TimestampMillis(1_795_359_845_123)),
        ]);
        let resolved = apache_avro::schema::ResolvedSchema::try_from(&schema).unwrap();
        let names = resolved.get_names().iter().map(|(n, s)| (n.clone(), (*s).clone())).collect();
        assert_eq!(
            to_json(value, &schema, &names),
            json!({"orderId": "o-1", "totalAmount": 12.34, "updatedAt": "2026-11-22T15:04:05.123Z"})
        );
    }
}
