//! OpenTelemetry carriers over AMQP header tables ([`FieldTable`]).
//!
//! [`FieldTableInjector`] writes every propagation field as an AMQP long string.
//! [`FieldTableExtractor`] reads long strings, byte arrays and short strings that hold UTF-8;
//! a propagation field held in any other AMQP type, or holding bytes that are not UTF-8, is
//! ignored and counted in `tracewire.propagation.rejected` (`carrier = "amqp"`). One bad header
//! never stops a delivery: the consumer simply starts a fresh trace.
//!
//! ```
//! use lapin::types::FieldTable;
//! use tracewire_amqp::carrier::{extract, inject};
//!
//! let mut headers = FieldTable::default();
//! inject(&opentelemetry::Context::current(), &mut headers);
//! let remote = extract(Some(&headers));
//! # let _ = remote;
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tracewire_core::messaging::{ATTEMPT_HEADER, parse_attempt};
use tracewire_core::propagation::{self, RejectReason, record_rejected};
use tracewire_core::w3c::TextSink;

/// The `carrier` attribute value on `tracewire.propagation.rejected` for AMQP headers.
pub const CARRIER: &str = "amqp";

/// The header RabbitMQ quorum queues use to count redeliveries of a message.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// The header RabbitMQ adds when it dead-letters a message (an array of tables, newest first).
pub const X_DEATH_HEADER: &str = "x-death";

/// Writes propagation fields into an AMQP header table as long strings, replacing any value
/// already stored under the same name. A field name longer than 255 bytes (not a valid AMQP
/// table key) is skipped and counted, never a panic.
#[derive(Debug)]
pub struct FieldTableInjector<'a>(pub &'a mut FieldTable);

impl Injector for FieldTableInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        match ShortString::try_new(key) {
            Ok(key) => {
                self.0
                    .insert(key, AMQPValue::LongString(LongString::from(value)));
            }
            Err(_) => record_rejected(CARRIER, RejectReason::Unrepresentable),
        }
    }
}

impl TextSink for FieldTableInjector<'_> {
    fn set_text(&mut self, name: &'static str, value: &str) {
        self.0.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
}

/// Reads propagation fields from an AMQP header table.
///
/// Accepted: long strings and byte arrays (what other AMQP clients send for text and for raw
/// bytes) and short strings, each only when it holds UTF-8. Everything else reads as absent and
/// is counted once per field.
#[derive(Debug)]
pub struct FieldTableExtractor<'a> {
    table: &'a FieldTable,
    // Bit per well-known propagation field already counted, so a field the propagator asks for
    // twice is counted once.
    counted: Cell<u8>,
}

impl<'a> FieldTableExtractor<'a> {
    /// An extractor over `table`.
    pub fn new(table: &'a FieldTable) -> Self {
        Self {
            table,
            counted: Cell::new(0),
        }
    }

    fn reject(&self, key: &str, reason: RejectReason) {
        let bit = match key {
            "traceparent" => 1,
            "tracestate" => 2,
            "baggage" => 4,
            _ => 0,
        };
        if bit != 0 {
            let seen = self.counted.get();
            if seen & bit != 0 {
                return;
            }
            self.counted.set(seen | bit);
        }
        record_rejected(CARRIER, reason);
    }
}

/// The text of a header value, when it is one of the text-carrying types and holds UTF-8.
fn value_text(value: &AMQPValue) -> Result<&str, RejectReason> {
    let bytes = match value {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ByteArray(b) => b.as_slice(),
        AMQPValue::ShortString(s) => return Ok(s.as_str()),
        _ => return Err(RejectReason::UnsupportedType),
    };
    std::str::from_utf8(bytes).map_err(|_| RejectReason::NotUtf8)
}

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.table.inner().get(key)?;
        match value_text(value) {
            Ok(text) => Some(text),
            Err(reason) => {
                self.reject(key, reason);
                None
            }
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.table.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Extracts the creation context carried by message headers (an empty context when there are
/// none, or nothing valid in them).
pub fn extract(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(table) => propagation::extract(&FieldTableExtractor::new(table), CARRIER),
        None => Context::new(),
    }
}

/// Injects `cx` into `headers`: first removes every field the configured propagator owns
/// (`traceparent`, `tracestate`, `baggage`, … — stale values copied from an earlier message
/// must not survive), then writes the fields of `cx`. Other headers are left as they are.
pub fn inject(cx: &Context, headers: &mut FieldTable) {
    remove_propagation_fields(headers);
    propagation::inject_text(cx, &mut FieldTableInjector(headers));
}

/// Removes the fields the configured propagator owns from `headers`. Nothing is copied when
/// none of them is present (the common case).
pub fn remove_propagation_fields(headers: &mut FieldTable) {
    if headers.inner().is_empty() {
        return;
    }
    global::get_text_map_propagator(|p| {
        if !p.fields().any(|f| headers.contains_key(f)) {
            return;
        }
        let fields: Vec<&str> = p.fields().collect();
        retain(headers, |key| !fields.contains(&key));
    });
}

/// Keeps only the entries whose key passes `keep` (`FieldTable` has no removal of its own).
pub(crate) fn retain(headers: &mut FieldTable, mut keep: impl FnMut(&str) -> bool) {
    let kept: BTreeMap<ShortString, AMQPValue> = headers
        .inner()
        .iter()
        .filter(|(k, _)| keep(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    *headers = FieldTable::from(kept);
}

/// Reads an integer-valued header written by any client: AMQP integers of every width, or the
/// decimal text form (long string, byte array, short string). Garbage reads as `None`.
pub(crate) fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let value = headers.inner().get(key)?;
    let n: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(s) => return parse_attempt(s.as_bytes()),
        AMQPValue::ByteArray(b) => return parse_attempt(b.as_slice()),
        AMQPValue::ShortString(s) => return parse_attempt(s.as_str().as_bytes()),
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// The attempt number of a message: the [`ATTEMPT_HEADER`] (1 when absent or unreadable), plus
/// the broker's redelivery count where the queue keeps one (`x-delivery-count`, quorum queues).
pub fn attempt(headers: Option<&FieldTable>) -> u32 {
    let Some(headers) = headers else { return 1 };
    let base = header_u32(headers, ATTEMPT_HEADER)
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let redeliveries = header_u32(headers, DELIVERY_COUNT_HEADER).unwrap_or(0);
    base.saturating_add(redeliveries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::ByteArray;

    #[test]
    fn full_context_round_trips_through_the_codec() {
        use tracewire_test::{FULL_TRACEPARENT, assert_full_context, full_context};
        global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());
        let mut table = FieldTable::default();
        table.insert("traceparent".into(), AMQPValue::LongString("stale".into()));
        table.insert("app".into(), AMQPValue::LongInt(7));
        inject(&full_context(), &mut table);
        assert_eq!(
            table.inner().get("traceparent"),
            Some(&AMQPValue::LongString(FULL_TRACEPARENT.into()))
        );
        assert_eq!(table.inner().get("app"), Some(&AMQPValue::LongInt(7)));
        assert_full_context(&extract(Some(&table)));
    }

    #[test]
    fn injector_writes_long_strings_and_skips_oversized_keys() {
        let mut table = FieldTable::default();
        let mut inj = FieldTableInjector(&mut table);
        inj.set("traceparent", "00-abc".into());
        inj.set(&"k".repeat(300), "v".into());
        assert_eq!(table.inner().len(), 1);
        assert_eq!(
            table.inner().get("traceparent"),
            Some(&AMQPValue::LongString("00-abc".into()))
        );
    }

    #[test]
    fn extractor_accepts_text_types_only() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongString("x".into()));
        table.insert("b".into(), AMQPValue::ByteArray(ByteArray::from(&b"y"[..])));
        table.insert("c".into(), AMQPValue::ShortString("z".into()));
        table.insert("d".into(), AMQPValue::LongInt(5));
        table.insert("e".into(), AMQPValue::LongString(vec![0xff, 0xfe].into()));
        let ex = FieldTableExtractor::new(&table);
        assert_eq!(ex.get("a"), Some("x"));
        assert_eq!(ex.get("b"), Some("y"));
        assert_eq!(ex.get("c"), Some("z"));
        assert_eq!(ex.get("d"), None);
        assert_eq!(ex.get("e"), None);
        assert_eq!(ex.get("missing"), None);
        assert_eq!(ex.keys(), vec!["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn attempt_reads_text_and_integers() {
        let mut table = FieldTable::default();
        assert_eq!(attempt(None), 1);
        assert_eq!(attempt(Some(&table)), 1);
        table.insert(ATTEMPT_HEADER.into(), AMQPValue::LongString("3".into()));
        assert_eq!(attempt(Some(&table)), 3);
        table.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        assert_eq!(attempt(Some(&table)), 5);
        table.insert(ATTEMPT_HEADER.into(), AMQPValue::LongInt(-4));
        assert_eq!(attempt(Some(&table)), 3);
        table.insert(ATTEMPT_HEADER.into(), AMQPValue::Boolean(true));
        assert_eq!(attempt(Some(&table)), 3);
    }
}
