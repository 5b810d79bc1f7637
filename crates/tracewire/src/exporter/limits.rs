//! `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT` / `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`: the SDK
//! enforces the count limits itself but not the value length, so spans pass through
//! [`LimitValues`] on their way to the exporter.

use std::time::Duration;

use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Truncates string attribute values (of spans, their events and links) to a number of
/// characters before export; other values pass unchanged.
#[derive(Debug)]
pub(crate) struct LimitValues<E> {
    inner: E,
    limit: Option<usize>,
}

impl<E> LimitValues<E> {
    pub(crate) fn new(inner: E, limit: Option<usize>) -> Self {
        Self { inner, limit }
    }
}

fn truncate(value: &mut Value, limit: usize) {
    let cut = |s: &str| -> Option<String> {
        let (at, _) = s.char_indices().nth(limit)?;
        Some(s[..at].to_owned())
    };
    match value {
        Value::String(s) => {
            if let Some(short) = cut(s.as_str()) {
                *s = StringValue::from(short);
            }
        }
        Value::Array(opentelemetry::Array::String(items)) => {
            for s in items.iter_mut() {
                if let Some(short) = cut(s.as_str()) {
                    *s = StringValue::from(short);
                }
            }
        }
        _ => {}
    }
}

fn limit_all(attributes: &mut [KeyValue], limit: usize) {
    for kv in attributes {
        truncate(&mut kv.value, limit);
    }
}

pub(crate) fn limit_span(span: &mut SpanData, limit: usize) {
    limit_all(&mut span.attributes, limit);
    for event in span.events.events.iter_mut() {
        limit_all(&mut event.attributes, limit);
    }
    for link in span.links.links.iter_mut() {
        limit_all(&mut link.attributes, limit);
    }
}

impl<E: SpanExporter> SpanExporter for LimitValues<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        if let Some(limit) = self.limit {
            for span in &mut batch {
                limit_span(span, limit);
            }
        }
        self.inner.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let mut attrs = vec![
            KeyValue::new("short", "abc"),
            KeyValue::new("long", "héllo wörld"),
            KeyValue::new("number", 123456789_i64),
            KeyValue::new(
                "list",
                Value::Array(vec![StringValue::from("abcdef"), StringValue::from("x")].into()),
            ),
        ];
        limit_all(&mut attrs, 4);
        assert_eq!(attrs[0].value.as_str(), "abc");
        assert_eq!(attrs[1].value.as_str(), "héll");
        assert_eq!(attrs[2].value, Value::I64(123456789));
        assert_eq!(attrs[3].value.to_string(), "[\"abcd\",\"x\"]");
    }
}
