//! Kafka record headers as OpenTelemetry carriers.
//!
//! - [`HeaderExtractor`] reads propagation headers from any rdkafka [`Headers`]
//!   ([`BorrowedHeaders`](rdkafka::message::BorrowedHeaders) of a consumed record,
//!   [`OwnedHeaders`] of a record being built).
//! - [`HeaderInjector`] appends propagation headers to [`OwnedHeaders`].
//! - [`inject_headers`] rebuilds a record's headers with the trace headers of a context,
//!   dropping stale ones (rdkafka cannot remove a header, so the set is copied).
//! - [`extract_context`] runs the global propagator over a record's headers.
//!
//! Kafka allows several headers with the same key; the last one wins, as it does for Kafka
//! clients that read headers into a map. A value that is longer than
//! [`MAX_VALUE_LEN`] or not UTF-8 is ignored and
//! counted in `tracewire.propagation.rejected` (`carrier = "kafka"`), and the record then
//! starts a fresh trace. Nothing here panics on what a producer put into a record.
//!
//! ```
//! use opentelemetry::trace::TraceContextExt;
//! use rdkafka::message::{Header, Headers, OwnedHeaders};
//! use tracewire_kafka::carrier::{extract_context, inject_headers};
//!
//! opentelemetry::global::set_text_map_propagator(
//!     opentelemetry_sdk::propagation::TraceContextPropagator::new(),
//! );
//! let received = OwnedHeaders::new()
//!     .insert(Header { key: "traceparent", value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") })
//!     .insert(Header { key: "tenant", value: Some("acme") });
//! let cx = extract_context(Some(&received));
//! assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//!
//! // Forwarding the record: the old `traceparent` is replaced, other headers are kept.
//! let forwarded = inject_headers(&cx, Some(&received));
//! assert_eq!(forwarded.count(), 2);
//! assert_eq!(forwarded.get(0).key, "tenant");
//! assert_eq!(forwarded.get(1).key, "traceparent");
//! ```

use std::cell::{Cell, OnceCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::{Context, global};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracewire_core::messaging::{ATTEMPT_HEADER, parse_attempt};
use tracewire_core::propagation::{MAX_VALUE_LEN, RejectReason, extract, record_rejected};
use tracewire_core::w3c::{TextSink, W3cPropagator};

/// The `carrier` attribute value on `tracewire.propagation.rejected` for Kafka headers.
pub const CARRIER: &str = "kafka";

/// Reads header `idx`. rdkafka panics while reading a header whose *key* is not UTF-8 (a
/// producer outside our control can send one); such a header is treated as unreadable.
pub(crate) fn header_at<H: Headers + ?Sized>(headers: &H, idx: usize) -> Option<Header<'_, &[u8]>> {
    match catch_unwind(AssertUnwindSafe(|| headers.try_get(idx))) {
        Ok(header) => header,
        Err(_) => {
            record_rejected(CARRIER, RejectReason::NotUtf8);
            None
        }
    }
}

/// How many headers [`HeaderExtractor`] reads once into a table on the stack; records with
/// more headers are scanned on every lookup instead.
const SCAN_CAPACITY: usize = 16;

type Entry<'a> = (&'a str, Option<&'a [u8]>);

/// The headers of a record read once (each read is a call into librdkafka).
struct Scanned<'a> {
    len: usize,
    entries: [Entry<'a>; SCAN_CAPACITY],
}

/// Reads propagation headers from Kafka record headers.
///
/// Lookups are by exact key (Kafka header keys are case-sensitive); with duplicate keys the
/// last header wins. A header with no value (`null`) counts as absent. Values that are too
/// long or not UTF-8 are skipped and counted once per extractor.
pub struct HeaderExtractor<'a, H: ?Sized> {
    headers: Option<&'a H>,
    /// The headers, read on first lookup (`None` inside when there are too many to table).
    scanned: OnceCell<Option<Scanned<'a>>>,
    /// Bit `i` is set once header `i` has been reported as rejected, so that a propagator
    /// asking for the same key twice does not count it twice.
    reported: Cell<u64>,
}

impl<'a, H: Headers + ?Sized> HeaderExtractor<'a, H> {
    /// Reads from `headers`.
    pub fn new(headers: &'a H) -> Self {
        Self::from_option(Some(headers))
    }

    /// Reads from the headers of a record, which may have none (`Message::headers()`).
    pub fn from_option(headers: Option<&'a H>) -> Self {
        Self {
            headers,
            scanned: OnceCell::new(),
            reported: Cell::new(0),
        }
    }

    fn scanned(&self) -> Option<&Scanned<'a>> {
        self.scanned
            .get_or_init(|| {
                let headers = self.headers?;
                let count = headers.count();
                if count > SCAN_CAPACITY {
                    return None;
                }
                let mut scanned = Scanned {
                    len: 0,
                    entries: [("", None); SCAN_CAPACITY],
                };
                for idx in 0..count {
                    if let Some(header) = header_at(headers, idx) {
                        scanned.entries[scanned.len] = (header.key, header.value);
                        scanned.len += 1;
                    }
                }
                Some(scanned)
            })
            .as_ref()
    }

    /// The last header called `key`: its index (for counting rejections once) and value.
    fn last(&self, key: &str) -> Option<(usize, Option<&'a [u8]>)> {
        if let Some(scanned) = self.scanned() {
            return scanned.entries[..scanned.len]
                .iter()
                .enumerate()
                .rev()
                .find(|(_, (k, _))| *k == key)
                .map(|(idx, (_, value))| (idx, *value));
        }
        let headers = self.headers?;
        (0..headers.count()).rev().find_map(|idx| {
            let header = header_at(headers, idx)?;
            (header.key == key).then_some((idx, header.value))
        })
    }

    fn reject(&self, idx: usize, reason: RejectReason) {
        if idx < 64 {
            let bit = 1u64 << idx;
            let seen = self.reported.get();
            if seen & bit != 0 {
                return;
            }
            self.reported.set(seen | bit);
        }
        record_rejected(CARRIER, reason);
    }

    fn text(&self, idx: usize, value: &'a [u8]) -> Option<&'a str> {
        if value.len() > MAX_VALUE_LEN {
            self.reject(idx, RejectReason::TooLong);
            return None;
        }
        match std::str::from_utf8(value) {
            Ok(text) => Some(text),
            Err(_) => {
                self.reject(idx, RejectReason::NotUtf8);
                None
            }
        }
    }
}

impl<H: Headers + ?Sized> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        let (idx, value) = self.last(key)?;
        self.text(idx, value?)
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        let mut push = |key| {
            if !keys.contains(&key) {
                keys.push(key);
            }
        };
        if let Some(scanned) = self.scanned() {
            scanned.entries[..scanned.len]
                .iter()
                .for_each(|(key, _)| push(*key));
        } else if let Some(headers) = self.headers {
            for idx in 0..headers.count() {
                if let Some(header) = header_at(headers, idx) {
                    push(header.key);
                }
            }
        }
        keys
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        // One value per key, like `get`: the last header wins.
        self.get(key).map(|value| vec![value])
    }
}

impl<H: ?Sized> fmt::Debug for HeaderExtractor<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderExtractor")
            .field("has_headers", &self.headers.is_some())
            .finish_non_exhaustive()
    }
}

/// Appends propagation headers to [`OwnedHeaders`].
///
/// Empty values are not written. It only appends: to replace the trace headers a record already carries, build the headers
/// with [`inject_headers`], which drops them first.
pub struct HeaderInjector {
    // Always `Some` between calls; `OwnedHeaders::insert` takes the headers by value.
    headers: Option<OwnedHeaders>,
}

impl HeaderInjector {
    /// Appends to `headers`.
    pub fn new(headers: OwnedHeaders) -> Self {
        Self {
            headers: Some(headers),
        }
    }

    /// The headers, with whatever the propagator wrote.
    pub fn into_headers(self) -> OwnedHeaders {
        self.headers.unwrap_or_default()
    }
}

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        // An empty value means "absent" for every W3C header (the trace-context propagator
        // writes an empty `tracestate`); it would only cost bytes on every record.
        if value.is_empty() {
            return;
        }
        let headers = self.headers.take().unwrap_or_default();
        self.headers = Some(headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        }));
    }
}

impl TextSink for HeaderInjector {
    fn set_text(&mut self, name: &'static str, value: &str) {
        if value.is_empty() {
            return;
        }
        let headers = self.headers.take().unwrap_or_default();
        self.headers = Some(headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        }));
    }
}

impl fmt::Debug for HeaderInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderInjector")
            .field("headers", &self.headers)
            .finish()
    }
}

/// Extracts the creation context a record carries, through the global propagator, into a
/// fresh [`Context`]. Returns an empty context (the consumer then starts a new trace) when the
/// record carries none or carries garbage.
pub fn extract_context<H: Headers + ?Sized>(headers: Option<&H>) -> Context {
    extract(&HeaderExtractor::from_option(headers), CARRIER)
}

/// Builds the headers for a record that should carry `cx`: every header of `existing` is
/// copied in order, except the ones the global propagator writes (`traceparent`,
/// `tracestate`, `baggage` by default), then the propagator injects `cx`.
///
/// Use it whenever a record is sent or forwarded, so a record never carries two
/// `traceparent` headers.
pub fn inject_headers<H: Headers + ?Sized>(cx: &Context, existing: Option<&H>) -> OwnedHeaders {
    rebuild(cx, existing, &[])
}

/// [`inject_headers`], also replacing the headers named in `replace` with the given values.
pub(crate) fn rebuild<H: Headers + ?Sized>(
    cx: &Context,
    existing: Option<&H>,
    replace: &[(&str, &[u8])],
) -> OwnedHeaders {
    global::get_text_map_propagator(|propagator| {
        let count = existing.map_or(0, |h| h.count());
        let mut out = OwnedHeaders::new_with_capacity(count + replace.len() + 3);
        if let Some(headers) = existing {
            for idx in 0..count {
                let Some(header) = header_at(headers, idx) else {
                    continue;
                };
                if replace.iter().any(|(key, _)| *key == header.key)
                    || is_propagation_field(propagator, header.key)
                {
                    continue;
                }
                out = out.insert(header);
            }
        }
        for (key, value) in replace {
            if is_propagation_field(propagator, key) {
                continue;
            }
            out = out.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut injector = HeaderInjector::new(out);
        if W3cPropagator::is(propagator) {
            // No `String` per header: the codec writes straight from its buffers.
            tracewire_core::w3c::inject_into(cx, &mut injector);
        } else {
            propagator.inject_context(cx, &mut injector);
        }
        injector.into_headers()
    })
}

fn is_propagation_field(propagator: &dyn TextMapPropagator, key: &str) -> bool {
    propagator.fields().any(|field| field == key)
}

/// Header of a retried record: the time (milliseconds since the Unix epoch) before which it
/// is not processed — the retry policy's backoff.
pub const NOT_BEFORE_HEADER: &str = "tracewire-not-before";

/// How long to wait before processing a record, from its [`NOT_BEFORE_HEADER`] (last one wins;
/// garbage and past times mean no wait, never a panic).
pub(crate) fn wait_of<H: Headers + ?Sized>(headers: Option<&H>) -> std::time::Duration {
    let not_before = headers
        .and_then(|h| {
            (0..h.count()).rev().find_map(|idx| {
                let header = header_at(h, idx)?;
                (header.key == NOT_BEFORE_HEADER).then_some(header.value)
            })
        })
        .flatten()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let Some(not_before) = not_before else {
        return std::time::Duration::ZERO;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // A clock far in the future is not trusted for more than an hour.
    std::time::Duration::from_millis(not_before.saturating_sub(now).min(3_600_000))
}

/// The attempt number a record carries in [`ATTEMPT_HEADER`] (last one wins), 1 by default.
pub(crate) fn attempt_of<H: Headers + ?Sized>(headers: Option<&H>) -> u32 {
    headers
        .and_then(|h| {
            (0..h.count()).rev().find_map(|idx| {
                let header = header_at(h, idx)?;
                (header.key == ATTEMPT_HEADER).then_some(header.value)
            })
        })
        .flatten()
        .and_then(parse_attempt)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapCompositePropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    use tracewire_core::propagation::rejected_total;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TP2: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn install() {
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
    }

    fn headers(pairs: &[(&str, Option<&[u8]>)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header { key, value: *value })
        })
    }

    fn trace_id(cx: &Context) -> String {
        cx.span().span_context().trace_id().to_string()
    }

    #[test]
    fn full_context_round_trips_through_the_codec() {
        use tracewire_test::{FULL_TRACEPARENT, assert_full_context, full_context};
        global::set_text_map_propagator(W3cPropagator::new());
        let stale = headers(&[("app", Some(b"1")), ("traceparent", Some(TP2.as_bytes()))]);
        let out = inject_headers(&full_context(), Some(&stale));
        let keys: Vec<&str> = out.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["app", "traceparent", "tracestate", "baggage"]);
        assert_eq!(out.get(1).value, Some(FULL_TRACEPARENT.as_bytes()));
        assert_full_context(&extract_context(Some(&out)));
    }

    #[test]
    fn last_duplicate_wins() {
        install();
        let h = headers(&[
            ("traceparent", Some(TP.as_bytes())),
            ("traceparent", Some(TP2.as_bytes())),
        ]);
        assert_eq!(HeaderExtractor::new(&h).get("traceparent"), Some(TP2));
        assert_eq!(
            trace_id(&extract_context(Some(&h))),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(HeaderExtractor::new(&h).keys(), vec!["traceparent"]);
    }

    #[test]
    fn binary_oversized_and_null_values_are_ignored_and_counted_once() {
        install();
        let big = vec![b'a'; MAX_VALUE_LEN + 1];
        let h = headers(&[
            ("traceparent", Some(b"00-\xff\xfe")),
            ("baggage", Some(&big)),
            ("tracestate", None),
        ]);
        let before = rejected_total();
        let cx = extract_context(Some(&h));
        assert!(!cx.span().span_context().is_valid());
        // One not-UTF-8 traceparent, one oversized baggage; the null tracestate is absent.
        assert_eq!(rejected_total() - before, 2);
    }

    #[test]
    fn many_headers_are_scanned_directly() {
        install();
        let mut h = OwnedHeaders::new();
        for i in 0..SCAN_CAPACITY + 4 {
            h = h.insert(Header {
                key: if i % 2 == 0 { "a" } else { "b" },
                value: Some(&[i as u8][..]),
            });
        }
        let h = h
            .insert(Header {
                key: "traceparent",
                value: Some(TP),
            })
            .insert(Header {
                key: "a",
                value: Some("last"),
            });
        let extractor = HeaderExtractor::new(&h);
        assert_eq!(extractor.get("a"), Some("last"));
        assert_eq!(extractor.keys(), vec!["a", "b", "traceparent"]);
        assert_eq!(
            trace_id(&extract_context(Some(&h))),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn no_headers_means_empty_context() {
        install();
        let cx = extract_context::<OwnedHeaders>(None);
        assert!(!cx.span().span_context().is_valid());
        assert!(
            HeaderExtractor::<OwnedHeaders>::from_option(None)
                .keys()
                .is_empty()
        );
    }

    #[test]
    fn injection_replaces_stale_trace_headers_and_keeps_the_rest() {
        install();
        let source = headers(&[("traceparent", Some(TP.as_bytes()))]);
        let cx = extract_context(Some(&source));
        let stale = headers(&[
            ("traceparent", Some(TP2.as_bytes())),
            ("app", Some(b"\x00\x01binary")),
            ("traceparent", Some(b"garbage")),
            ("empty", None),
            ("tracestate", Some(b"old=1")),
        ]);
        let out = inject_headers(&cx, Some(&stale));
        let pairs: Vec<(&str, Option<&[u8]>)> = out.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            pairs,
            vec![
                ("app", Some(&b"\x00\x01binary"[..])),
                ("empty", None),
                ("traceparent", Some(TP.as_bytes())),
            ]
        );
    }

    #[test]
    fn rebuild_replaces_named_headers() {
        install();
        let stale = headers(&[("tracewire-attempt", Some(b"1")), ("k", Some(b"v"))]);
        let out = rebuild(
            &Context::new(),
            Some(&stale),
            &[("tracewire-attempt", b"2")],
        );
        let pairs: Vec<(&str, Option<&[u8]>)> = out.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            pairs,
            vec![
                ("k", Some(&b"v"[..])),
                ("tracewire-attempt", Some(&b"2"[..]))
            ]
        );
    }
}
