//! A W3C codec of tracewire's own: `traceparent` and `tracestate`
//! ([Trace Context](https://www.w3.org/TR/trace-context/)) and `baggage`
//! ([Baggage](https://www.w3.org/TR/baggage/)), parsed and formatted without intermediate
//! allocations, behind OpenTelemetry's [`TextMapPropagator`] interface.
//!
//! [`W3cPropagator`] is what `tracewire::init()` installs unless told otherwise; any other
//! propagator can still be configured, and the carriers then go through it instead.
//!
//! It reads what OpenTelemetry's SDK propagators (`TraceContextPropagator` +
//! `BaggagePropagator`) read from every header that follows the specifications, with the same
//! result, and writes the same headers — with three differences, all where the specifications
//! say so:
//!
//! - headers that break the grammar or the limits are ignored as a whole (the SDK accepts some
//!   of them in part: a version-`00` `traceparent` with a trailing `-`, ids shorter than 32 or
//!   16 digits, more than 32 `tracestate` members, `baggage` members without `=`, …);
//! - a baggage value keeps a `=` it contains (`k=a=b` is `a=b`, where the SDK reads `a`), and
//!   percent-escapes that are not UTF-8 decode to U+FFFD (the SDK drops the entry);
//! - an empty `tracestate` is not written, and `%` and `\` in baggage values are
//!   percent-encoded.
//!
//! A differential property test (`tests/w3c_differential.rs`) checks this against the SDK on
//! generated valid and mutated headers.
//!
//! ```
//! use opentelemetry::propagation::TextMapPropagator;
//! use opentelemetry::trace::TraceContextExt;
//! use std::collections::HashMap;
//! use tracewire_core::w3c::W3cPropagator;
//!
//! let mut carrier = HashMap::new();
//! carrier.insert("traceparent".to_string(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string());
//! carrier.insert("baggage".to_string(), "tenant=acme".to_string());
//! let cx = W3cPropagator::new().extract(&carrier);
//! assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//!
//! let mut out = HashMap::new();
//! W3cPropagator::new().inject_context(&cx, &mut out);
//! assert_eq!(out["traceparent"], carrier["traceparent"]);
//! assert_eq!(out["baggage"], "tenant=acme");
//! ```

mod baggage;
mod split;
mod traceparent;
mod tracestate;

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

pub use baggage::{
    MAX_BYTES as MAX_BAGGAGE_BYTES, MAX_KEPT as MAX_BAGGAGE_KEPT,
    MAX_MEMBERS as MAX_BAGGAGE_MEMBERS, parse_baggage, percent_decode, validate_baggage,
    write_baggage,
};
pub(crate) use traceparent::hex_word;
pub use traceparent::{TRACEPARENT_LEN, Traceparent, parse_traceparent, parse_traceparent_bytes};
pub use tracestate::{
    MAX_MEMBERS as MAX_TRACESTATE_MEMBERS, parse_tracestate, validate_tracestate, write_tracestate,
};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// The `baggage` header name.
pub const BAGGAGE: &str = "baggage";

/// A carrier that takes header values as borrowed text, so the codec can hand it a value
/// formatted in a reused buffer instead of a fresh `String` per header (what
/// [`Injector::set`] requires).
pub trait TextSink {
    /// Stores `value` under `name` (one of [`TRACEPARENT`], [`TRACESTATE`], [`BAGGAGE`]),
    /// replacing or appending as the carrier's own injector does.
    fn set_text(&mut self, name: &'static str, value: &str);
}

/// Adapts any [`Injector`] to [`TextSink`] (one `String` per header, as the trait demands).
struct InjectorSink<'a>(&'a mut dyn Injector);

impl TextSink for InjectorSink<'_> {
    fn set_text(&mut self, name: &'static str, value: &str) {
        self.0.set(name, value.to_owned());
    }
}

thread_local! {
    /// Formatting buffer for `tracestate` and `baggage`, reused across calls on a thread.
    static SCRATCH: Cell<String> = const { Cell::new(String::new()) };
}

fn with_scratch<R>(f: impl FnOnce(&mut String) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.take();
        buf.clear();
        let result = f(&mut buf);
        cell.set(buf);
        result
    })
}

/// The field names, in a static only this type hands out: [`W3cPropagator::is`] recognises
/// the propagator by their address.
fn field_names() -> &'static [String; 3] {
    static FIELDS: OnceLock<[String; 3]> = OnceLock::new();
    FIELDS.get_or_init(|| [TRACEPARENT.into(), TRACESTATE.into(), BAGGAGE.into()])
}

/// W3C trace context (`traceparent`, `tracestate`) and baggage, in one propagator.
///
/// Equivalent to OpenTelemetry's `TextMapCompositePropagator` of `TraceContextPropagator`
/// and `BaggagePropagator` on valid headers (see the [module docs](self) for where it is
/// stricter), without their intermediate allocations.
///
/// Dropping one is counted, so that [`global_is_w3c`](crate::propagation::global_is_w3c) can
/// remember that the global propagator is this one without looking again on every request
/// (the global propagator is dropped when it is replaced). To use the codec without
/// installing it, call [`inject_into`] and [`extract_with_context`].
#[derive(Debug, Clone, Default)]
pub struct W3cPropagator {
    _private: (),
}

/// How many [`W3cPropagator`]s have been dropped.
static DROPPED: AtomicU64 = AtomicU64::new(0);

impl Drop for W3cPropagator {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::Release);
    }
}

/// How many [`W3cPropagator`]s have been dropped so far: while it stays the same, a
/// propagator seen installed is still installed.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Acquire)
}

impl W3cPropagator {
    /// The propagator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `propagator` is a [`W3cPropagator`] (not wrapped in a composite): carriers
    /// then write through [`inject_into`](Self::inject_into) without a `String` per header.
    pub fn is(propagator: &dyn TextMapPropagator) -> bool {
        let ours = field_names()[0].as_ptr();
        propagator
            .fields()
            .next()
            .is_some_and(|name| std::ptr::eq(name.as_ptr(), ours))
    }

    /// The remote span context carried by `extractor`, when its `traceparent` is valid (with
    /// the `tracestate`, or an empty one when that is absent or invalid).
    pub fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        let (trace_id, span_id, flags) = parse_traceparent(extractor.get(TRACEPARENT)?)?;
        let trace_state = extractor
            .get(TRACESTATE)
            .and_then(parse_tracestate)
            .unwrap_or(TraceState::NONE);
        Some(SpanContext::new(
            trace_id,
            span_id,
            flags,
            true,
            trace_state,
        ))
    }

    /// Writes the trace context and baggage of `cx` into `sink`: see [`inject_into`].
    pub fn inject_into(&self, cx: &Context, sink: &mut dyn TextSink) {
        inject_into(cx, sink);
    }
}

/// Writes the trace context and baggage of `cx` into `sink` as [`W3cPropagator`] does:
/// `traceparent` when `cx` has a valid span context, `tracestate` when that is not empty,
/// `baggage` when there is any.
pub fn inject_into(cx: &Context, sink: &mut dyn TextSink) {
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        sink.set_text(TRACEPARENT, Traceparent::new(sc).as_str());
        if sc.trace_state() != &TraceState::NONE {
            with_scratch(|buf| {
                write_tracestate(sc.trace_state(), buf);
                if !buf.is_empty() {
                    sink.set_text(TRACESTATE, buf);
                }
            });
        }
    }
    let baggage = cx.baggage();
    if !baggage.is_empty() {
        with_scratch(|buf| {
            write_baggage(baggage, buf);
            if !buf.is_empty() {
                sink.set_text(BAGGAGE, buf);
            }
        });
    }
}

/// What [`parse_traceparent`] reads: trace id, parent span id, flags.
pub(crate) type ParentIds = (TraceId, SpanId, TraceFlags);

/// `cx` with the remote parent and the baggage of the W3C header values: the parent's ids
/// (from [`parse_traceparent`]) with its `tracestate` value (an invalid one is read as
/// empty), and the `baggage` value (an invalid one is ignored). `cx` itself when neither is
/// there.
pub(crate) fn context_from(
    cx: &Context,
    parent: Option<(ParentIds, Option<&str>)>,
    baggage: Option<&str>,
) -> Context {
    let baggage = baggage.and_then(parse_baggage);
    let cx = match parent {
        Some(((trace_id, span_id, flags), tracestate)) => {
            let trace_state = tracestate
                .and_then(parse_tracestate)
                .unwrap_or(TraceState::NONE);
            cx.with_remote_span_context(SpanContext::new(
                trace_id,
                span_id,
                flags,
                true,
                trace_state,
            ))
        }
        None if baggage.is_none() => return cx.clone(),
        None => cx.clone(),
    };
    match baggage {
        Some(baggage) => cx.with_baggage(baggage),
        None => cx,
    }
}

/// `cx` with the remote parent and the baggage `extractor` carries, as [`W3cPropagator`]
/// extracts them.
pub fn extract_with_context(cx: &Context, extractor: &dyn Extractor) -> Context {
    let baggage = extractor.get(BAGGAGE);
    let parent = extractor
        .get(TRACEPARENT)
        .and_then(parse_traceparent)
        .map(|ids| (ids, extractor.get(TRACESTATE)));
    context_from(cx, parent, baggage)
}

impl TextMapPropagator for W3cPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.inject_into(cx, &mut InjectorSink(injector));
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        extract_with_context(cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(field_names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapCompositePropagator;
    use std::collections::HashMap;

    #[test]
    fn recognises_itself_only() {
        assert!(W3cPropagator::is(&W3cPropagator::new()));
        let composite = TextMapCompositePropagator::new(vec![Box::new(W3cPropagator::new())]);
        assert!(!W3cPropagator::is(&composite));
    }

    #[test]
    fn empty_tracestate_is_not_written() {
        let mut carrier = HashMap::new();
        carrier.insert(
            TRACEPARENT.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".to_string(),
        );
        let cx = W3cPropagator::new().extract(&carrier);
        let mut out = HashMap::new();
        W3cPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(out, carrier);
    }
}
