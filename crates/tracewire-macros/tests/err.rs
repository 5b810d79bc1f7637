//! A returned `Err` sets the span status, `error.type`, an `exception` event, and counts the
//! call as `result = error`.

use std::fmt;

use opentelemetry::trace::Status;
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

#[derive(Debug)]
struct DbError {
    table: &'static str,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {} is locked", self.table)
    }
}

impl std::error::Error for DbError {}

#[derive(Debug)]
struct OnlyDebug(#[allow(dead_code)] u8);

struct Opaque;

#[traced]
async fn load(id: u32) -> Result<u32, DbError> {
    if id == 0 {
        return Err(DbError { table: "orders" });
    }
    Ok(id)
}

#[traced]
fn parse(input: &str) -> std::io::Result<u32> {
    let n: u32 = input
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(n)
}

#[traced]
fn boxed(fail: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if fail {
        Err(DbError { table: "users" })?;
    }
    Ok(())
}

#[traced]
fn debug_only() -> Result<(), OnlyDebug> {
    Err(OnlyDebug(7))
}

#[traced]
fn opaque() -> Result<(), Opaque> {
    Err(Opaque)
}

#[traced]
fn generic_error<E>(e: E) -> Result<(), E> {
    Err(e)
}

#[tokio::test]
async fn err_sets_status_type_and_exception_event() {
    let capture = Capture::install();
    assert_eq!(load(1).await.unwrap(), 1);
    assert!(load(0).await.is_err());

    let spans = capture.spans_named("load");
    let ok = spans.iter().find(|s| !s.is_error()).expect("ok span");
    assert_eq!(ok.status, Status::Unset);
    assert_eq!(ok.attr("error.type"), None);
    assert!(ok.events.is_empty());

    let failed = spans.iter().find(|s| s.is_error()).expect("error span");
    assert_eq!(failed.status, Status::error("table orders is locked"));
    assert_eq!(failed.attr_str("error.type").as_deref(), Some("DbError"));
    let event = failed.events.iter().next().expect("exception event");
    assert_eq!(event.name, "exception");
    let attr = |k: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("exception.type").as_deref(), Some("DbError"));
    assert_eq!(
        attr("exception.message").as_deref(),
        Some("table orders is locked")
    );

    let calls = capture.metric("function.calls");
    let count = |result: &str| {
        calls
            .iter()
            .find(|p| p.attr("function") == Some("load") && p.attr("result") == Some(result))
            .map(|p| p.count_or_value())
    };
    assert_eq!(count("ok"), Some(1.0));
    assert_eq!(count("error"), Some(1.0));
}

#[test]
fn question_mark_conversions_and_aliases() {
    let capture = Capture::install();
    assert_eq!(parse("12").unwrap(), 12);
    assert!(parse("x").is_err());
    assert!(boxed(true).is_err());
    assert!(boxed(false).is_ok());

    let failed = capture
        .spans_named("parse")
        .into_iter()
        .find(|s| s.is_error())
        .expect("error span");
    assert_eq!(
        failed.attr_str("error.type").as_deref(),
        Some("std::io::error::Error")
    );
    assert_eq!(
        failed.status,
        Status::error("invalid digit found in string")
    );
    let boxed_failed = capture
        .spans_named("boxed")
        .into_iter()
        .find(|s| s.is_error())
        .expect("error span");
    assert_eq!(boxed_failed.status, Status::error("table users is locked"));
}

#[test]
fn errors_without_display() {
    let capture = Capture::install();
    let _ = debug_only();
    let _ = opaque();
    let _ = generic_error("bad");

    let span = capture.span("debug_only");
    assert_eq!(span.status, Status::error("OnlyDebug(7)"));
    assert_eq!(span.attr_str("error.type").as_deref(), Some("OnlyDebug"));

    let span = capture.span("opaque");
    assert!(span.is_error());
    assert_eq!(span.attr_str("error.type").as_deref(), Some("Opaque"));

    // A generic error type without bounds records no message but still the type.
    let span = capture.span("generic_error");
    assert!(span.is_error());
    assert_eq!(span.attr_str("error.type").as_deref(), Some("&str"));
}
