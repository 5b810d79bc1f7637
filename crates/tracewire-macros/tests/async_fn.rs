//! `#[traced]` on async functions: span names, `code.*` attributes, the parent/child chain,
//! and the context seen by code inside the body.

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

#[traced]
async fn inner(x: u32) -> u32 {
    tracing::info!(x, "inside inner");
    x + 1
}

#[traced]
async fn outer(x: u32) -> u32 {
    let y = inner(x).await;
    tokio::task::yield_now().await;
    inner(y).await
}

#[tokio::test]
async fn nested_calls_form_a_chain_under_the_current_span() {
    let capture = Capture::install();
    let tracer = capture.tracer_provider().tracer("test");
    let server = tracer
        .span_builder("GET /orders/{id}")
        .with_kind(SpanKind::Server)
        .start(&tracer);
    let cx = opentelemetry::Context::current_with_span(server);
    let server_trace = cx.span().span_context().trace_id().to_string();
    let server_span = cx.span().span_context().span_id().to_string();

    let out = opentelemetry::context::FutureExt::with_context(outer(1), cx.clone()).await;
    assert_eq!(out, 3);
    cx.span().end();

    let outer_span = capture.span("outer");
    let inners = capture.spans_named("inner");
    assert_eq!(inners.len(), 2);
    assert_eq!(outer_span.trace_id(), server_trace);
    assert_eq!(outer_span.parent_id(), server_span);
    assert_eq!(outer_span.kind(), SpanKind::Internal);
    for span in &inners {
        assert_eq!(span.trace_id(), server_trace);
        assert_eq!(span.parent_id(), outer_span.span_id());
    }
    assert_eq!(
        outer_span.attr_str("code.function.name").as_deref(),
        Some("async_fn::outer")
    );
    assert_eq!(
        outer_span.attr_str("code.namespace").as_deref(),
        Some("async_fn")
    );

    // Log lines inside the body carry the inner span's ids.
    let logs: Vec<_> = capture
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "inside inner")
        .collect();
    assert_eq!(logs.len(), 2);
    for line in &logs {
        assert_eq!(line["trace_id"], server_trace.as_str());
        assert!(line["x"].as_u64().is_some());
        assert!(inners.iter().any(|s| s.span_id() == line["span_id"]));
    }
    assert_ne!(logs[0]["span_id"], logs[1]["span_id"]);
}

#[tokio::test]
async fn without_a_current_span_the_call_starts_a_trace() {
    let capture = Capture::install();
    inner(1).await;
    let span = capture.span("inner");
    assert_eq!(span.parent_id(), "0000000000000000");
}
