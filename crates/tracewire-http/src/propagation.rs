//! `http::HeaderMap` carriers for OpenTelemetry propagators.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracewire_core::propagation::{RejectReason, W3cValues, record_rejected};
use tracewire_core::w3c::{BAGGAGE, TRACEPARENT, TRACESTATE, TextSink, Traceparent};

/// The `carrier` attribute value on `tracewire.propagation.rejected` for HTTP headers.
pub const CARRIER: &str = "http";

/// Reads propagation headers from a [`HeaderMap`]. Values that are not visible ASCII are
/// skipped (and counted), never unwrapped.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

/// The text of a header value; a value that is not visible ASCII is counted and skipped.
fn text(value: &HeaderValue) -> Option<&str> {
    match value.to_str() {
        Ok(s) => Some(s),
        Err(_) => {
            record_rejected(CARRIER, RejectReason::NotUtf8);
            None
        }
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        text(self.0.get(key)?)
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

/// The W3C header names, built once: a lookup by `HeaderName` skips parsing (and lowercasing)
/// the name that a lookup by `&str` does.
static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
static TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);
static BAGGAGE_HEADER: HeaderName = HeaderName::from_static(BAGGAGE);

/// Up to this many header values, the three W3C headers are found in one pass over the map;
/// past it, by three lookups (each hashes its name).
const SCAN_LIMIT: usize = 24;

/// The first value of each W3C header, as `HeaderMap::get` finds them.
fn w3c_values(headers: &HeaderMap) -> W3cValues<'_> {
    let mut found: [Option<&HeaderValue>; 3] = [None; 3];
    if headers.len() > SCAN_LIMIT {
        found = [&TRACEPARENT_HEADER, &TRACESTATE_HEADER, &BAGGAGE_HEADER].map(|n| headers.get(n));
    } else {
        // The first value of each name, as `HeaderMap::get` finds it.
        for (name, value) in headers {
            let slot = match name.as_str().len() {
                11 if *name == TRACEPARENT_HEADER => 0,
                10 if *name == TRACESTATE_HEADER => 1,
                7 if *name == BAGGAGE_HEADER => 2,
                _ => continue,
            };
            found[slot].get_or_insert(value);
        }
    }
    // Raw bytes: the codec checks that what it reads is text, and counts what is not.
    let [traceparent, tracestate, baggage] = found.map(|v| v.map(HeaderValue::as_bytes));
    W3cValues {
        traceparent,
        tracestate,
        baggage,
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
            TRACEPARENT => TRACEPARENT_HEADER.clone(),
            TRACESTATE => TRACESTATE_HEADER.clone(),
            BAGGAGE => BAGGAGE_HEADER.clone(),
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
        // The W3C names are built once; cloning a static name copies no bytes.
        let name = match name {
            TRACEPARENT => TRACEPARENT_HEADER.clone(),
            TRACESTATE => TRACESTATE_HEADER.clone(),
            BAGGAGE => BAGGAGE_HEADER.clone(),
            other => HeaderName::from_static(other),
        };
        self.0.insert(name, value);
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
    extract_with(headers, tracewire_core::propagation::global_is_w3c())
}

/// [`extract_headers`], told whether the configured propagator is tracewire's
/// ([`global_is_w3c`](tracewire_core::propagation::global_is_w3c)): then the codec reads the
/// three W3C headers by prebuilt names, without a trip through the global propagator, with
/// the same result.
pub(crate) fn extract_with(headers: &HeaderMap, w3c: bool) -> Context {
    if w3c {
        tracewire_core::propagation::extract_w3c_values(w3c_values(headers), CARRIER)
    } else {
        tracewire_core::propagation::extract(&HeaderExtractor(headers), CARRIER)
    }
}

/// Writes the `traceparent` of `cx`'s span, when it is valid, replacing any there: what
/// injecting through tracewire's propagator writes as `traceparent`, formatted on the stack
/// and stored without a trip through the global propagator.
pub(crate) fn insert_traceparent(cx: &Context, headers: &mut HeaderMap) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    match HeaderValue::from_bytes(Traceparent::new(sc).as_bytes()) {
        Ok(value) => {
            headers.insert(TRACEPARENT_HEADER.clone(), value);
        }
        Err(_) => record_rejected(CARRIER, RejectReason::Unrepresentable),
    }
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

    /// What an extracted context carries, as a user of it sees it.
    fn summary(cx: &Context) -> String {
        use opentelemetry::baggage::BaggageExt;
        let span = cx.span();
        let sc = span.span_context();
        let mut baggage: Vec<String> = cx
            .baggage()
            .iter()
            .map(|(k, (v, m))| format!("{k}={v};{}", m.as_str()))
            .collect();
        baggage.sort();
        format!(
            "active={} valid={} remote={} {}-{}-{:02x} state=[{}] baggage={baggage:?}",
            cx.has_active_span(),
            sc.is_valid(),
            sc.is_remote(),
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8(),
            sc.trace_state().header(),
        )
    }

    #[test]
    fn the_direct_codec_path_extracts_what_the_global_propagator_does() {
        opentelemetry::global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());
        const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let long_state = format!(
            "k={}",
            "v".repeat(tracewire_core::propagation::MAX_VALUE_LEN)
        );
        let long_tp = format!("cc{}-{}", &TP[2..], "x".repeat(300));
        // Not visible ASCII: not text to `HeaderValue::to_str`.
        let long_non_text: String = "é".repeat(5000);
        let cases: Vec<Vec<(&str, &[u8])>> = vec![
            vec![],
            vec![("traceparent", TP.as_bytes())],
            vec![
                (
                    "traceparent",
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                ),
                ("tracestate", b"vendor=abc,ot=th:8"),
                ("baggage", b"tenant=acme,user=42;prop=1"),
            ],
            vec![(
                "traceparent",
                b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            )],
            vec![(
                "traceparent",
                b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )],
            vec![(
                "traceparent",
                b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            vec![(
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            )],
            vec![(
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            )],
            vec![(
                "traceparent",
                b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            vec![("traceparent", long_tp.as_bytes())],
            vec![(
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-\xff\xfe-01",
            )],
            vec![("traceparent", TP.as_bytes()), ("tracestate", b"Bad Key=1")],
            vec![
                ("traceparent", TP.as_bytes()),
                ("tracestate", long_state.as_bytes()),
            ],
            vec![("traceparent", TP.as_bytes()), ("tracestate", b"k=\xff")],
            vec![("tracestate", b"vendor=abc")],
            vec![("baggage", b"tenant=acme")],
            vec![("baggage", b"tenant")],
            vec![("baggage", b"k=%E2%82%AC%20euro")],
            vec![("baggage", long_state.as_bytes())],
            vec![("baggage", b"k=\xff")],
            vec![("traceparent", b"garbage"), ("baggage", b"tenant=acme")],
            // Repeated headers: the first value counts, as for `HeaderMap::get`.
            vec![("traceparent", TP.as_bytes()), ("traceparent", b"garbage")],
            vec![("traceparent", b"garbage"), ("traceparent", TP.as_bytes())],
            // A trace state is read only with a valid parent, so only then counted.
            vec![("traceparent", b"garbage"), ("tracestate", b"k=\xff")],
            vec![
                ("traceparent", long_non_text.as_bytes()),
                ("baggage", long_non_text.as_bytes()),
            ],
            vec![
                ("traceparent", long_tp.as_bytes()),
                ("tracestate", long_state.as_bytes()),
            ],
        ];
        // Each case also with more headers than are scanned for: then looked up by name.
        let many: Vec<(String, Vec<u8>)> = (0..=SCAN_LIMIT)
            .map(|i| (format!("x-filler-{i}"), b"filler".to_vec()))
            .collect();
        let cases = cases.iter().flat_map(|case| {
            let crowded: Vec<(&str, &[u8])> = case
                .iter()
                .copied()
                .chain(many.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
                .collect();
            [case.clone(), crowded]
        });
        for case in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in &case {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            let before = tracewire_core::propagation::rejected_total();
            let generic = tracewire_core::propagation::extract(&HeaderExtractor(&headers), CARRIER);
            let generic_rejected = tracewire_core::propagation::rejected_total() - before;
            let before = tracewire_core::propagation::rejected_total();
            let direct = extract_with(&headers, true);
            let direct_rejected = tracewire_core::propagation::rejected_total() - before;
            assert_eq!(summary(&direct), summary(&generic), "{headers:?}");
            assert_eq!(direct_rejected, generic_rejected, "{headers:?}");
            assert_eq!(summary(&extract_headers(&headers)), summary(&generic));
        }
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
