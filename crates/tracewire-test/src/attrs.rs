//! Short assertions on span, link, event and metric attributes.
//!
//! ```
//! use tracewire_test::attrs::{attr_set, i, s};
//! use opentelemetry::KeyValue;
//! assert_eq!(s("ack"), opentelemetry::Value::from("ack"));
//! assert_eq!(i(3), opentelemetry::Value::I64(3));
//! assert_eq!(
//!     attr_set(&[KeyValue::new("b", 2), KeyValue::new("a", "x")]),
//!     ["a=x", "b=2"]
//! );
//! ```

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

use crate::{Capture, MetricPoint};

/// The value of `key` on `span`; panics listing the attributes when absent.
#[track_caller]
pub fn attr(span: &SpanData, key: &str) -> Value {
    find(&span.attributes, key).unwrap_or_else(|| {
        panic!(
            "span {:?} has no attribute {key}; it has {:?}",
            span.name, span.attributes
        )
    })
}

/// The value of `key` among `attributes` (of a span, a link, an event), if present.
pub fn find(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// Whether `span` has the attribute `key`.
pub fn has_attr(span: &SpanData, key: &str) -> bool {
    span.attributes.iter().any(|kv| kv.key.as_str() == key)
}

/// Asserts that attribute `key` of `span` is `value`.
#[track_caller]
pub fn assert_attr(span: &SpanData, key: &str, value: impl Into<Value>) {
    assert_eq!(
        find(&span.attributes, key),
        Some(value.into()),
        "attribute {key} of span {:?}; attributes: {:?}",
        span.name,
        span.attributes
    );
}

/// A string value.
pub fn s(v: &str) -> Value {
    Value::from(v.to_owned())
}

/// An integer value.
pub fn i(v: i64) -> Value {
    Value::I64(v)
}

/// A boolean value.
pub fn b(v: bool) -> Value {
    Value::Bool(v)
}

/// Sorted `key=value` text of attributes, for whole-set comparisons.
pub fn attr_set(kvs: &[KeyValue]) -> Vec<String> {
    let mut v: Vec<String> = kvs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    v.sort();
    v
}

/// The span's trace id.
pub fn trace_id(span: &SpanData) -> TraceId {
    span.span_context.trace_id()
}

/// The span's id.
pub fn span_id(span: &SpanData) -> SpanId {
    span.span_context.span_id()
}

/// Points of metric `name` whose attributes include every pair in `with`.
pub fn points(capture: &Capture, name: &str, with: &[(&str, &str)]) -> Vec<MetricPoint> {
    capture
        .metric(name)
        .into_iter()
        .filter(|p| with.iter().all(|(k, v)| p.attr(k) == Some(*v)))
        .collect()
}

/// The summed value (sums) or count (histograms) of the points of `name` matching `with`.
pub fn total(capture: &Capture, name: &str, with: &[(&str, &str)]) -> f64 {
    points(capture, name, with)
        .iter()
        .map(MetricPoint::count_or_value)
        .sum()
}
