//! `http::HeaderMap` carriers for OpenTelemetry propagators.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use tracewire_core::propagation::{RejectReason, record_rejected};
use tracewire_core::w3c::TextSink;

/// The `carrier` attribute value on `tracewire.propagation.rejected` for HTTP headers.
pub const CARRIER: &str = "http";

/// Reads propagation headers from a [`HeaderMap`]. Values that are not visible ASCII are
/// skipped (and counted), never unwrapped.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        match value.to_str() {
            Ok(s) => Some(s),
            Err(_) => {
                record_rejected(CARRIER, RejectReason::NotUtf8);
                None
            }
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| match v.to_str() {
                Ok(s) => Some(s),
                Err(_) => {
                    record_rejected(CARRIER, RejectReason::NotUtf8);
                    None
                }
            })
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes propagation headers into a [`HeaderMap`], replacing any value already there (never
/// two `traceparent` headers). A name or value the propagator produced that is not a valid
/// header is skipped and counted.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C names are static: no allocation for the headers written on every request.
        let name = match key {
            "traceparent" => HeaderName::from_static("traceparent"),
            "tracestate" => HeaderName::from_static("tracestate"),
            "baggage" => HeaderName::from_static("baggage"),
            other => match HeaderName::from_bytes(other.as_bytes()) {
                Ok(name) => name,
                Err(_) => {
                    record_rejected(CARRIER, RejectReason::Unrepresentable);
                    return;
                }
            },
        };
        let Ok(value) = HeaderValue::try_from(value) else {
            record_rejected(CARRIER, RejectReason::Unrepresentable);
            return;
        };
        self.0.insert(name, value);
    }

    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
}

impl TextSink for HeaderInjector<'_> {
    fn set_text(&mut self, name: &'static str, value: &str) {
        let Ok(value) = HeaderValue::from_str(value) else {
            record_rejected(CARRIER, RejectReason::Unrepresentable);
            return;
        };
        self.0.insert(HeaderName::from_static(name), value);
    }
}

/// Injects `cx` into `headers` through the configured propagator, replacing the headers it
/// writes. With tracewire's default propagator the values go from the codec's buffers
/// straight into the header map, without a `String` per header.
///
/// ```
/// use http::HeaderMap;
/// opentelemetry::global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());
/// let mut incoming = HeaderMap::new();
/// incoming.insert("traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let cx = tracewire_http::propagation::extract_headers(&incoming);
/// let mut outgoing = HeaderMap::new();
/// tracewire_http::propagation::inject_headers(&cx, &mut outgoing);
/// assert_eq!(outgoing["traceparent"], incoming["traceparent"]);
/// ```
pub fn inject_headers(cx: &Context, headers: &mut HeaderMap) {
    tracewire_core::propagation::inject_text(cx, &mut HeaderInjector(headers));
}

/// Extracts the remote context carried by `headers` (an empty context when none, or nothing
/// valid, is carried; rejections are counted with `carrier = "http"`).
pub fn extract_headers(headers: &HeaderMap) -> Context {
    tracewire_core::propagation::extract(&HeaderExtractor(headers), CARRIER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_context_round_trips_through_the_codec() {
        use tracewire_test::{
            FULL_TRACEPARENT, FULL_TRACESTATE, assert_full_context, full_context,
        };
        opentelemetry::global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("stale"));
        inject_headers(&full_context(), &mut headers);
        assert_eq!(headers.get_all("traceparent").iter().count(), 1);
        assert_eq!(headers["traceparent"], FULL_TRACEPARENT);
        assert_eq!(headers["tracestate"], FULL_TRACESTATE);
        assert_full_context(&extract_headers(&headers));
    }

    #[test]
    fn non_ascii_values_are_skipped_and_counted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_bytes(b"00-\xff\xfe-01").unwrap(),
        );
        let before = tracewire_core::propagation::rejected_total();
        assert_eq!(HeaderExtractor(&headers).get("traceparent"), None);
        assert_eq!(tracewire_core::propagation::rejected_total(), before + 1);
    }

    #[test]
    fn injection_replaces_and_skips_invalid() {
        let mut headers = HeaderMap::new();
        headers.append("traceparent", HeaderValue::from_static("stale-1"));
        headers.append("traceparent", HeaderValue::from_static("stale-2"));
        let mut inj = HeaderInjector(&mut headers);
        inj.set("traceparent", "00-fresh".into());
        inj.set("bad header", "x".into());
        inj.set("baggage", "a=\nb".into());
        assert_eq!(headers.get_all("traceparent").iter().count(), 1);
        assert_eq!(headers["traceparent"], "00-fresh");
        assert!(headers.get("baggage").is_none());
    }
}
