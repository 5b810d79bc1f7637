//! `#[derive(Event)]`: `emit()` writes one JSON log line and one span event, PII never in clear.

use std::borrow::Cow;
use std::fmt;

use opentelemetry::Value;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use tracewire::__private::Event as _;
use tracewire_macros::Event;
use tracewire_test::{Capture, SpanDataExt};

#[derive(Debug, Clone, Copy)]
enum Status {
    Placed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Placed => "placed",
        })
    }
}

#[derive(Event)]
#[event(name = "order.placed", version = 2)]
struct OrderPlaced<'a> {
    order_id: u64,
    amount: f64,
    express: bool,
    currency: &'a str,
    coupon: Option<String>,
    note: Option<Cow<'static, str>>,
    #[event(display)]
    status: Status,
    #[event(pii)]
    email: String,
    #[event(pii = "hash")]
    customer_id: String,
    #[event(pii = "hash")]
    phone: Option<String>,
}

const EMAIL: &str = "alice@example.com";
const CUSTOMER: &str = "customer-4242";

fn sample(coupon: Option<String>) -> OrderPlaced<'static> {
    OrderPlaced {
        order_id: 42,
        amount: 19.5,
        express: true,
        currency: "EUR",
        coupon,
        note: None,
        status: Status::Placed,
        email: EMAIL.into(),
        customer_id: CUSTOMER.into(),
        phone: Some("+33 6 00 00 00 00".into()),
    }
}

#[test]
fn emit_writes_a_log_line_and_a_span_event_in_the_current_trace() {
    let capture = Capture::install();
    tracewire_core::event::set_pii_hash_key("test-key");
    let tracer = capture.tracer_provider().tracer("test");
    let root = tracer.start("request");
    let cx = opentelemetry::Context::current_with_span(root);
    let trace_id = cx.span().span_context().trace_id().to_string();
    let span_id = cx.span().span_context().span_id().to_string();
    {
        let _g = cx.clone().attach();
        sample(Some("SPRING".into())).emit();
    }
    cx.span().end();

    let lines: Vec<_> = capture
        .logs()
        .into_iter()
        .filter(|l| l["target"] == "tracewire::event")
        .collect();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "order.placed");
    assert_eq!(line["event.name"], "order.placed");
    assert_eq!(line["event.version"], 2);
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["span_id"], span_id.as_str());
    assert_eq!(line["order_id"], 42);
    assert_eq!(line["amount"], 19.5);
    assert_eq!(line["express"], true);
    assert_eq!(line["currency"], "EUR");
    assert_eq!(line["coupon"], "SPRING");
    assert!(line.get("note").is_none(), "absent options are left out");
    assert_eq!(line["status"], "placed");
    assert_eq!(line["email"], "REDACTED");
    let hash = tracewire_core::event::pii_hash(CUSTOMER);
    assert_eq!(hash.len(), 32);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(line["customer_id"], hash.as_str());
    assert_eq!(line["phone"].as_str().map(str::len), Some(32));

    let span = capture.span("request");
    let events: Vec<_> = span.events.iter().collect();
    assert_eq!(events.len(), 1);
    let event = events[0];
    assert_eq!(event.name, "order.placed");
    let attr = |k: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(attr("event.name"), Some(Value::from("order.placed")));
    assert_eq!(attr("event.version"), Some(Value::I64(2)));
    assert_eq!(attr("order_id"), Some(Value::I64(42)));
    assert_eq!(attr("amount"), Some(Value::F64(19.5)));
    assert_eq!(attr("express"), Some(Value::Bool(true)));
    assert_eq!(attr("currency"), Some(Value::from("EUR")));
    assert_eq!(attr("coupon"), Some(Value::from("SPRING")));
    assert_eq!(attr("note"), None);
    assert_eq!(attr("status"), Some(Value::from("placed")));
    assert_eq!(attr("email"), Some(Value::from("REDACTED")));
    assert_eq!(attr("customer_id"), Some(Value::from(hash.clone())));
    let _ = span.trace_id();
}

#[test]
fn pii_is_never_written_in_clear() {
    let capture = Capture::install();
    tracewire_core::event::set_pii_hash_key("test-key");
    let tracer = capture.tracer_provider().tracer("test");
    let root = tracer.start("request");
    let cx = opentelemetry::Context::current_with_span(root);
    {
        let _g = cx.clone().attach();
        sample(None).emit();
        sample(None).emit();
    }
    cx.span().end();
    let raw = capture.raw_logs();
    assert!(raw.contains("order.placed"));
    for secret in [EMAIL, CUSTOMER, "+33 6 00 00 00 00"] {
        assert!(!raw.contains(secret), "{secret} in the logs: {raw}");
        for span in capture.spans() {
            for event in span.events.iter() {
                for kv in &event.attributes {
                    assert!(!kv.value.to_string().contains(secret));
                }
            }
        }
    }
    // The same value hashes the same way, so events can still be correlated.
    let lines: Vec<_> = capture
        .logs()
        .into_iter()
        .filter(|l| l["target"] == "tracewire::event")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["customer_id"], lines[1]["customer_id"]);
    assert_ne!(lines[0]["customer_id"], "REDACTED");
}

#[test]
fn hashed_fields_are_redacted_without_a_key() {
    let capture = Capture::install();
    // No key configured and none in the environment: hashing would be reversible by guessing.
    assert!(std::env::var_os(tracewire_core::event::PII_HASH_KEY_ENV).is_none());
    sample(None).emit();
    let line = capture
        .logs()
        .into_iter()
        .find(|l| l["target"] == "tracewire::event")
        .unwrap();
    assert_eq!(line["customer_id"], "REDACTED");
    assert_eq!(line["phone"], "REDACTED");
    assert!(!capture.raw_logs().contains(CUSTOMER));
}

#[test]
fn the_hash_depends_on_the_key() {
    tracewire_core::event::set_pii_hash_key("one");
    let a = tracewire_core::event::pii_hash(CUSTOMER);
    tracewire_core::event::set_pii_hash_key("two");
    let b = tracewire_core::event::pii_hash(CUSTOMER);
    assert_ne!(a, b);
    assert_ne!(a, tracewire_core::event::pii_hash("customer-4243"));
}

#[test]
fn without_a_recording_span_only_the_log_line_is_written() {
    let capture = Capture::install();
    sample(None).emit();
    assert_eq!(
        capture
            .logs()
            .iter()
            .filter(|l| l["target"] == "tracewire::event")
            .count(),
        1
    );
    assert!(capture.spans().is_empty());
}

#[test]
fn schema_of_the_derived_event() {
    let schema = OrderPlaced::schema();
    assert_eq!(schema.name, "order.placed");
    assert_eq!(schema.version, 2);
    assert_eq!(schema.type_name, "event::OrderPlaced");
    let names: Vec<_> = schema.fields.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "order_id",
            "amount",
            "express",
            "currency",
            "coupon",
            "note",
            "status",
            "email",
            "customer_id",
            "phone"
        ]
    );
    use tracewire_core::event::{FieldType, Pii};
    let field = |n: &str| *schema.fields.iter().find(|f| f.name == n).unwrap();
    assert_eq!(field("order_id").ty, FieldType::Integer);
    assert_eq!(field("amount").ty, FieldType::Number);
    assert_eq!(field("express").ty, FieldType::Boolean);
    assert_eq!(field("status").ty, FieldType::String);
    assert!(field("coupon").optional && !field("currency").optional);
    assert_eq!(field("email").pii, Pii::Redact);
    assert_eq!(field("customer_id").pii, Pii::Hash);
    assert!(
        tracewire_core::event::schema::events()
            .iter()
            .any(|e| e.name == "order.placed" && e.version == 2)
    );
}
