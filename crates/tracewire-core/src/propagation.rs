//! Extraction and injection of trace context through the globally configured propagator.
//!
//! Carriers (HTTP headers, AMQP field tables, Kafka headers) implement OpenTelemetry's
//! [`Injector`]/[`Extractor`], and these functions run them through `opentelemetry::global`'s
//! `TextMapPropagator`: tracewire's own [`W3cPropagator`] by
//! default (W3C trace context and baggage), whatever the user configured otherwise. A carrier
//! that also implements [`TextSink`] is written through [`inject_text`] without a `String` per
//! header when the configured propagator is tracewire's.
//!
//! Bad input never fails the request or message that carried it. A value longer than
//! [`MAX_VALUE_LEN`], a value that is not UTF-8, or a `traceparent` the propagator cannot parse
//! is ignored: the receiver starts a fresh trace, and the rejection is counted in the
//! `tracewire.propagation.rejected` counter (attributes `carrier` and `reason`) and in
//! [`rejected_total`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue, global};

use crate::w3c::{TextSink, W3cPropagator};

/// Longest header value handed to the propagator, in bytes. The W3C baggage specification caps
/// a whole `baggage` header at 8192 bytes; nothing tracewire propagates is legitimately longer.
pub const MAX_VALUE_LEN: usize = 8192;

/// Longest `traceparent` accepted. Version `00` is exactly 55 characters; later versions may
/// append fields, so some room is left, but not kilobytes.
pub const MAX_TRACEPARENT_LEN: usize = 256;

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// Why a propagation header was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The value was longer than the limit for its header.
    TooLong,
    /// The value was not valid UTF-8 (or not visible ASCII where the carrier requires it).
    NotUtf8,
    /// A `traceparent` was present but the propagator could not parse it.
    Malformed,
    /// On injection: the propagator produced a name or value the carrier cannot hold.
    Unrepresentable,
    /// The carrier held the value in a type that cannot carry text (AMQP numbers, tables, …).
    UnsupportedType,
}

impl RejectReason {
    /// The value of the `reason` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLong => "too_long",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::Malformed => "malformed",
            RejectReason::Unrepresentable => "unrepresentable",
            RejectReason::UnsupportedType => "unsupported_type",
        }
    }
}

static REJECTED: AtomicU64 = AtomicU64::new(0);

/// Counts one ignored propagation header. `carrier` names the transport (`"http"`, `"amqp"`,
/// `"kafka"`). Carriers call this; it is public so user-written carriers can too.
pub fn record_rejected(carrier: &'static str, reason: RejectReason) {
    static COUNTER: OnceLock<opentelemetry::metrics::Counter<u64>> = OnceLock::new();
    REJECTED.fetch_add(1, Ordering::Relaxed);
    let counter = COUNTER.get_or_init(|| {
        crate::metrics::meter()
            .u64_counter("tracewire.propagation.rejected")
            .with_unit("{header}")
            .with_description(
                "Propagation headers ignored because they were malformed, too long or not text",
            )
            .build()
    });
    counter.add(
        1,
        &[
            KeyValue::new("carrier", carrier),
            KeyValue::new("reason", reason.as_str()),
        ],
    );
}

/// How many propagation headers this process has ignored so far (all carriers, all reasons).
pub fn rejected_total() -> u64 {
    REJECTED.load(Ordering::Relaxed)
}

/// An [`Extractor`] that hides oversized values from the propagator and counts them.
struct Guarded<'a> {
    inner: &'a dyn Extractor,
    carrier: &'static str,
    /// Set when the propagator asked for `traceparent` and got a value within limits, so a
    /// context that still has no remote span afterwards was malformed. Remembered rather than
    /// looked up again, so carriers that count rejections in `get` count each header once.
    traceparent_seen: std::cell::Cell<bool>,
}

impl Extractor for Guarded<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.inner.get(key)?;
        let limit = if key.eq_ignore_ascii_case(TRACEPARENT) {
            MAX_TRACEPARENT_LEN
        } else {
            MAX_VALUE_LEN
        };
        if value.len() > limit {
            record_rejected(self.carrier, RejectReason::TooLong);
            return None;
        }
        if limit == MAX_TRACEPARENT_LEN {
            self.traceparent_seen.set(true);
        }
        Some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.inner.keys()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .inner
            .get_all(key)?
            .into_iter()
            .filter(|v| {
                let ok = v.len() <= MAX_VALUE_LEN;
                if !ok {
                    record_rejected(self.carrier, RejectReason::TooLong);
                }
                ok
            })
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Extracts the remote context carried by `extractor` into a fresh [`Context`] (nothing of the
/// caller's current context leaks in). Returns an empty context — the caller then starts a new
/// trace — when nothing valid was carried.
pub fn extract(extractor: &dyn Extractor, carrier: &'static str) -> Context {
    extract_with_context(&Context::new(), extractor, carrier)
}

/// Like [`extract`], on top of `parent` (its values are kept, its span replaced when a valid
/// remote span context was carried).
pub fn extract_with_context(
    parent: &Context,
    extractor: &dyn Extractor,
    carrier: &'static str,
) -> Context {
    guarded_extract(extractor, carrier, |guarded| {
        global::get_text_map_propagator(|p| p.extract_with_context(parent, guarded))
    })
}

/// The three W3C header values of one carrier as it holds them, raw bytes (the first value of
/// each name), for [`extract_w3c_values`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct W3cValues<'a> {
    /// The `traceparent` value.
    pub traceparent: Option<&'a [u8]>,
    /// The `tracestate` value.
    pub tracestate: Option<&'a [u8]>,
    /// The `baggage` value.
    pub baggage: Option<&'a [u8]>,
}

/// Whether `value` is text as an HTTP header value must be to be read as text: visible ASCII
/// and tabs (what `http::HeaderValue::to_str` accepts).
fn is_text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
}

/// `value` as text within `limit` bytes; otherwise `None`, the reason counted.
fn text_within<'v>(value: &'v [u8], limit: usize, carrier: &'static str) -> Option<&'v str> {
    let reason = if !is_text(value) {
        RejectReason::NotUtf8
    } else if value.len() > limit {
        RejectReason::TooLong
    } else {
        return std::str::from_utf8(value).ok();
    };
    record_rejected(carrier, reason);
    None
}

/// What [`extract_w3c`] does over a carrier of header-like values (text only when visible
/// ASCII, as HTTP's), from values it has already found: for a carrier that reads all three in
/// one pass over its fields. The same limits ([`MAX_TRACEPARENT_LEN`], [`MAX_VALUE_LEN`]), the
/// same rejections counted under `carrier`, the same context. The `traceparent` is parsed from
/// its bytes directly: the parser checks every byte, so it need not be checked for text first.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// use tracewire_core::propagation::{W3cValues, extract_w3c_values};
///
/// let cx = extract_w3c_values(W3cValues {
///     traceparent: Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
///     ..W3cValues::default()
/// }, "custom");
/// assert!(cx.span().span_context().is_remote());
/// ```
pub fn extract_w3c_values(values: W3cValues<'_>, carrier: &'static str) -> Context {
    // What the propagator reads, in its order: the trace state only with a valid parent.
    let baggage = values
        .baggage
        .and_then(|value| text_within(value, MAX_VALUE_LEN, carrier));
    let parent = values.traceparent.and_then(|value| {
        if value.len() <= MAX_TRACEPARENT_LEN
            && let Some(ids) = crate::w3c::parse_traceparent_bytes(value)
        {
            return Some(ids);
        }
        // Refused, for the reason a carrier reading its values as text would give first.
        let reason = if !is_text(value) {
            RejectReason::NotUtf8
        } else if value.len() > MAX_TRACEPARENT_LEN {
            RejectReason::TooLong
        } else {
            RejectReason::Malformed
        };
        record_rejected(carrier, reason);
        None
    });
    let parent = parent.map(|ids| {
        let state = values
            .tracestate
            .and_then(|value| text_within(value, MAX_VALUE_LEN, carrier));
        (ids, state)
    });
    crate::w3c::context_from(&Context::new(), parent, baggage)
}

/// What [`extract`] does when the configured propagator is [`W3cPropagator`], without going
/// through the global propagator: for a carrier that has checked [`global_is_w3c`] once. The
/// same limits, the same rejections counted, the same context.
pub fn extract_w3c(extractor: &dyn Extractor, carrier: &'static str) -> Context {
    guarded_extract(extractor, carrier, |guarded| {
        crate::w3c::extract_with_context(&Context::new(), guarded)
    })
}

/// Runs `extract` on `extractor` behind the size guard, then counts a `traceparent` that was
/// there but did not parse.
fn guarded_extract(
    extractor: &dyn Extractor,
    carrier: &'static str,
    extract: impl FnOnce(&Guarded<'_>) -> Context,
) -> Context {
    let guarded = Guarded {
        inner: extractor,
        carrier,
        traceparent_seen: std::cell::Cell::new(false),
    };
    let cx = extract(&guarded);
    if guarded.traceparent_seen.get() && !cx.span().span_context().is_remote() {
        record_rejected(carrier, RejectReason::Malformed);
    }
    cx
}

/// Injects `cx` (its span context, trace state and baggage, as the propagator decides) into
/// `injector`.
pub fn inject(cx: &Context, injector: &mut dyn Injector) {
    global::get_text_map_propagator(|p| p.inject_context(cx, injector));
}

/// Injects `cx` into a carrier that takes borrowed text: straight from the codec's buffers
/// when the configured propagator is [`W3cPropagator`], through the propagator's
/// [`Injector::set`] otherwise.
pub fn inject_text<C: Injector + TextSink>(cx: &Context, carrier: &mut C) {
    if global_is_w3c() {
        crate::w3c::inject_into(cx, carrier);
    } else {
        inject(cx, carrier);
    }
}

/// Whether the globally configured propagator is tracewire's [`W3cPropagator`] (whose fields
/// are exactly `traceparent`, `tracestate` and `baggage`).
///
/// Once a thread has seen it installed, it does not look again (the global propagator's lock
/// is a count every thread writes) until a [`W3cPropagator`] is dropped, as the installed one
/// is when another propagator replaces it.
pub fn global_is_w3c() -> bool {
    thread_local! {
        /// The drop count when this thread last saw a `W3cPropagator` installed.
        static SEEN_AT: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
    }
    // Read before the propagator: a replacement after this read changes the count.
    let dropped = crate::w3c::dropped();
    if SEEN_AT.try_with(|seen| seen.get() == dropped) == Ok(true) {
        return true;
    }
    let w3c = global::get_text_map_propagator(W3cPropagator::is);
    let _ = SEEN_AT.try_with(|seen| seen.set(if w3c { dropped } else { u64::MAX }));
    w3c
}

/// Injects the current context into `injector`.
pub fn inject_current(injector: &mut dyn Injector) {
    Context::map_current(|cx| inject(cx, injector));
}

/// The remote span context carried by `cx`, when it holds a valid one (for span links).
pub fn remote_span_context(cx: &Context) -> Option<opentelemetry::trace::SpanContext> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapCompositePropagator;
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    use std::collections::HashMap;

    fn install() {
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
    }

    #[test]
    fn whether_the_global_propagator_is_w3c_follows_every_replacement() {
        global::set_text_map_propagator(W3cPropagator::new());
        assert!(global_is_w3c());
        assert!(global_is_w3c(), "remembered");
        install();
        assert!(!global_is_w3c(), "replaced on this thread");
        global::set_text_map_propagator(W3cPropagator::new());
        assert!(global_is_w3c());
        // Replaced on another thread while this one remembers it.
        std::thread::spawn(install).join().unwrap();
        assert!(!global_is_w3c(), "replaced on another thread");
        std::thread::spawn(|| global::set_text_map_propagator(W3cPropagator::new()))
            .join()
            .unwrap();
        assert!(global_is_w3c());
        assert!(std::thread::spawn(global_is_w3c).join().unwrap());
        // A composite holding it is not it.
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![Box::new(
            W3cPropagator::new(),
        )]));
        assert!(!global_is_w3c());
    }

    fn carrier(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn valid_traceparent_round_trips() {
        install();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
        let cx = extract(&carrier(&[("traceparent", tp.clone())]), "test");
        let span = cx.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HashMap::new();
        inject(&cx, &mut out);
        assert_eq!(out.get("traceparent"), Some(&tp));
    }

    #[test]
    fn malformed_and_oversized_are_ignored_and_counted() {
        install();
        let before = rejected_total();
        for bad in [
            "00-zzzz-00f067aa0ba902b7-01".to_string(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01{}",
                "-x".repeat(300)
            ),
            String::new(),
        ] {
            let cx = extract(&carrier(&[("traceparent", bad)]), "test");
            assert!(!cx.span().span_context().is_valid());
        }
        assert_eq!(rejected_total() - before, 4);

        let huge_baggage = format!("k={}", "v".repeat(MAX_VALUE_LEN));
        let cx = extract(&carrier(&[("baggage", huge_baggage)]), "test");
        assert_eq!(opentelemetry::baggage::BaggageExt::baggage(&cx).len(), 0);
        assert_eq!(rejected_total() - before, 5);
    }
}
