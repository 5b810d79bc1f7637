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
