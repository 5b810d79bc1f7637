//! A panic unwinding through a `#[traced]` call ends its span as an error; a future dropped
//! before completion ends its span marked cancelled. Neither leaks a span or an in-flight count.

use std::time::Duration;

use opentelemetry::trace::Status;
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

#[traced]
fn explode(n: u32) -> u32 {
    if n > 0 {
        panic!("boom");
    }
    n
}

#[traced]
async fn explode_later() {
    tokio::task::yield_now().await;
    panic!("async boom");
}

#[traced]
async fn slow() -> Result<(), String> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

fn in_flight(capture: &Capture, function: &str) -> f64 {
    capture
        .metric("function.calls.concurrent")
        .iter()
        .find(|p| p.attr("function") == Some(function))
        .map(|p| p.count_or_value())
        .expect("in-flight point")
}

#[test]
fn sync_panic_ends_the_span_as_an_error() {
    let capture = Capture::install();
    let caught = std::panic::catch_unwind(|| explode(1));
    assert!(caught.is_err());
    let span = capture.span("explode");
    assert_eq!(span.status, Status::error("panicked"));
    assert_eq!(span.attr_str("error.type").as_deref(), Some("panic"));
    assert_eq!(span.attr("tracewire.cancelled"), None);
    let calls = capture.metric("function.calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].attr("result"), Some("error"));
    assert_eq!(in_flight(&capture, "explode"), 0.0);
}

#[tokio::test]
async fn async_panic_in_a_task_ends_the_span_as_an_error() {
    let capture = Capture::install();
    let joined = tokio::spawn(explode_later()).await;
    assert!(joined.unwrap_err().is_panic());
    let span = capture.span("explode_later");
    assert_eq!(span.status, Status::error("panicked"));
    assert_eq!(span.attr_str("error.type").as_deref(), Some("panic"));
    assert_eq!(in_flight(&capture, "explode_later"), 0.0);
}

#[test]
fn async_panic_is_an_error_even_when_the_future_is_dropped_later() {
    let capture = Capture::install();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut fut = Box::pin(explode_later());
    // Poll once by hand (pending at the yield), then poll again inside catch_unwind: the
    // future is dropped only after the unwinding finished.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let _guard = rt.enter();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = fut.as_mut().poll(&mut cx);
    }));
    assert!(caught.is_err());
    assert!(!std::thread::panicking());
    drop(fut);
    let span = capture.span("explode_later");
    assert_eq!(span.status, Status::error("panicked"));
    assert_eq!(span.attr("tracewire.cancelled"), None);
}

#[tokio::test]
async fn dropped_future_ends_its_span_as_cancelled() {
    let capture = Capture::install();
    let timed_out = tokio::time::timeout(Duration::from_millis(20), slow()).await;
    assert!(timed_out.is_err());
    let span = capture.span("slow");
    assert_eq!(
        span.attr_str("tracewire.cancelled").as_deref(),
        Some("true")
    );
    assert_eq!(span.status, Status::Unset);
    assert!(span.end_time > span.start_time);
    // No result: not counted in calls, but no longer in flight.
    assert!(
        capture
            .metric("function.calls")
            .iter()
            .all(|p| p.attr("function") != Some("slow"))
    );
    assert_eq!(in_flight(&capture, "slow"), 0.0);
}

#[tokio::test]
async fn a_future_never_polled_records_nothing() {
    let capture = Capture::install();
    drop(slow());
    assert!(capture.spans_named("slow").is_empty());
}
