//! A full propagated context, the same in every carrier's tests and benches.

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};

/// The `traceparent` that [`full_context`] is written as.
pub const FULL_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The `tracestate` that [`full_context`] is written as.
pub const FULL_TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// A remote, sampled span context with a two-member `tracestate` and two baggage entries
/// (`tenant=acme corp`, `tier=gold`): everything a carrier has to write and read back.
pub fn full_context() -> Context {
    let state =
        TraceState::from_key_value([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")])
            .expect("valid tracestate");
    let span_context = SpanContext::new(
        TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736),
        SpanId::from(0x00f067aa0ba902b7),
        TraceFlags::SAMPLED,
        true,
        state,
    );
    Context::new()
        .with_remote_span_context(span_context)
        .with_baggage([
            KeyValue::new("tenant", "acme corp"),
            KeyValue::new("tier", "gold"),
        ])
}

/// Panics unless `cx` is [`full_context`] read back: the same trace id, parent span id, flags,
/// `tracestate` members and exactly its two baggage entries.
#[track_caller]
pub fn assert_full_context(cx: &Context) {
    let span = cx.span();
    let sc = span.span_context();
    assert_eq!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    assert!(sc.is_sampled(), "the sampled flag was lost");
    assert!(sc.is_remote(), "an extracted context is remote");
    assert_eq!(sc.trace_state().header(), FULL_TRACESTATE);
    let baggage = cx.baggage();
    assert_eq!(baggage.get("tenant").map(|v| v.as_str()), Some("acme corp"));
    assert_eq!(baggage.get("tier").map(|v| v.as_str()), Some("gold"));
    assert_eq!(baggage.len(), 2, "unexpected baggage entries");
}
