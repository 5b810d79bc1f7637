//! Unsampled calls: nothing exported, `fields(...)` not evaluated, metrics still counted, and
//! the context still propagates (children stay unsampled).

use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::Sampler;
use tracewire_macros::traced;
use tracewire_test::Capture;

static EVALUATED: AtomicUsize = AtomicUsize::new(0);

fn expensive() -> u64 {
    EVALUATED.fetch_add(1, Ordering::SeqCst);
    1
}

#[traced(fields(cost = expensive()))]
async fn work() -> bool {
    let cx = opentelemetry::Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid() && !sc.is_sampled()
}

#[tokio::test]
async fn unsampled_calls_export_nothing_and_skip_fields() {
    let capture = Capture::install_with_sampler(Sampler::AlwaysOff);
    assert!(work().await);
    assert!(capture.spans().is_empty());
    assert_eq!(EVALUATED.load(Ordering::SeqCst), 0);
    let calls = capture.metric("function.calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count_or_value(), 1.0);
}

#[traced]
fn failing() -> Result<(), String> {
    Err("nope".into())
}

#[test]
fn unsampled_errors_are_still_counted() {
    let capture = Capture::install_with_sampler(Sampler::AlwaysOff);
    assert!(failing().is_err());
    assert!(capture.spans().is_empty());
    let calls = capture.metric("function.calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].attr("result"), Some("error"));
    assert_eq!(calls[0].attr("function"), Some("failing"));
}

#[traced]
async fn child() -> String {
    opentelemetry::Context::current()
        .span()
        .span_context()
        .span_id()
        .to_string()
}

fn unsampled_parent() -> opentelemetry::Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let sc = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

#[tokio::test]
async fn inside_an_unsampled_trace_children_follow_the_parent() {
    let capture = Capture::install_with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let cx = unsampled_parent();
    // Default: a (dropped) child span with its own id.
    let id = opentelemetry::context::FutureExt::with_context(child(), cx.clone()).await;
    assert_ne!(id, "00f067aa0ba902b7");
    // With the parent-based shortcut: no span is started; the body runs in the caller's
    // unsampled context.
    tracewire_core::traced::set_skip_unsampled_children(true);
    let id = opentelemetry::context::FutureExt::with_context(child(), cx.clone()).await;
    assert_eq!(id, "00f067aa0ba902b7");
    assert!(capture.spans().is_empty());
    let calls = capture.metric("function.calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count_or_value(), 2.0);
    // A sampled trace is unaffected.
    child().await;
    assert_eq!(capture.spans_named("child").len(), 1);
}

#[traced]
async fn skipped_outcome(fail: bool) -> Result<(), String> {
    if fail { Err("nope".to_owned()) } else { Ok(()) }
}

#[traced]
async fn skipped_pending() {
    std::future::pending::<()>().await;
}

#[traced]
async fn skipped_panic() {
    panic!("boom");
}

#[tokio::test]
async fn calls_without_a_span_count_every_ending_as_calls_with_one_do() {
    use opentelemetry::context::FutureExt as _;
    use tracewire_test::SpanDataExt as _;
    let capture = Capture::install_with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    tracewire_core::traced::set_skip_unsampled_children(true);
    let cx = unsampled_parent();
    assert!(
        skipped_outcome(false)
            .with_context(cx.clone())
            .await
            .is_ok()
    );
    assert!(
        skipped_outcome(true)
            .with_context(cx.clone())
            .await
            .is_err()
    );
    // Cancelled: no result, no duration.
    let pending = skipped_pending().with_context(cx.clone());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(5), pending)
            .await
            .is_err()
    );
    let panicked = tokio::spawn(skipped_panic().with_context(cx.clone())).await;
    assert!(panicked.is_err());
    assert!(capture.spans().is_empty());

    let by = |function: &str, result: &str| {
        capture.counter(
            "function.calls",
            &[("function", function), ("result", result)],
        )
    };
    assert_eq!(by("skipped_outcome", "ok"), 1);
    assert_eq!(by("skipped_outcome", "error"), 1);
    assert_eq!(
        by("skipped_pending", "ok") + by("skipped_pending", "error"),
        0
    );
    assert_eq!(by("skipped_panic", "error"), 1);
    let durations = |function: &str| {
        capture
            .histogram_count("function.calls.duration", &[("function", function)])
            .0
    };
    assert_eq!(durations("skipped_outcome"), 2);
    assert_eq!(durations("skipped_pending"), 0);
    assert_eq!(durations("skipped_panic"), 1);
    for point in capture.metric("function.calls.concurrent") {
        assert_eq!(point.count_or_value(), 0.0, "{point:?}");
    }

    // Under a sampled parent the span records, with its code attributes.
    let sampled = {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    };
    assert!(skipped_outcome(false).with_context(sampled).await.is_ok());
    let span = capture.span("skipped_outcome");
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        span.attr("code.function.name")
            .map(|v| v.to_string())
            .as_deref(),
        Some("sampling::skipped_outcome")
    );
    assert_eq!(
        span.attr("code.namespace")
            .map(|v| v.to_string())
            .as_deref(),
        Some("sampling")
    );
}

#[traced]
async fn chosen() {}

#[traced]
async fn not_chosen() {}

/// Samples the spans whose `code.function.name`, as given at their creation, is
/// `sampling::chosen`.
#[derive(Debug, Clone)]
struct ByFunction;

impl opentelemetry_sdk::trace::ShouldSample for ByFunction {
    fn should_sample(
        &self,
        _: Option<&opentelemetry::Context>,
        _: opentelemetry::trace::TraceId,
        _: &str,
        _: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        _: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry::trace::TraceState;
        use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult};
        let chosen = attributes.iter().any(|kv| {
            kv.key.as_str() == "code.function.name" && kv.value.as_str() == "sampling::chosen"
        });
        SamplingResult {
            decision: if chosen {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: TraceState::default(),
        }
    }
}

#[tokio::test]
async fn the_sampler_sees_the_code_attributes_at_creation() {
    let capture = Capture::install_with_sampler(ByFunction);
    chosen().await;
    not_chosen().await;
    let spans = capture.spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["chosen"]);
    // Recorded once each, not twice (the builder's attributes are the span's).
    assert_eq!(spans[0].attributes.len(), 2, "{:?}", spans[0].attributes);
}
