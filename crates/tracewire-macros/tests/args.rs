//! Arguments of `#[traced]`: `name`, `fields`, `skip`/`skip_all`, `kind`, `crate`.

use opentelemetry::Value;
use opentelemetry::trace::SpanKind;
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

struct User {
    id: u64,
    email: String,
}

#[traced(name = "orders.load", kind = client)]
async fn load(order_id: u64) -> u64 {
    order_id
}

#[traced(fields(user.id = user.id, tenant = "acme", retries = 3u8, ratio = 0.5, vip = true, order_id, label = &label))]
fn with_fields(user: &User, order_id: u32, label: String) -> String {
    // Nothing was moved out of the arguments to record them.
    format!("{}:{order_id}:{label}", user.email)
}

#[traced(skip(password), fields(name = name.len()))]
fn login(name: &str, password: &str) -> bool {
    !name.is_empty() && !password.is_empty()
}

#[traced(skip_all)]
fn secret(token: String) -> usize {
    token.len()
}

mod reexport {
    pub(crate) use tracewire as telemetry;
}

#[traced(crate = reexport::telemetry, kind = producer)]
fn through_reexport() {}

#[traced(kind = server)]
fn server() {}

#[traced(kind = consumer)]
fn consumer() {}

#[traced(kind = internal)]
fn internal() {}

#[tokio::test]
async fn name_and_kind() {
    let capture = Capture::install();
    load(7).await;
    let span = capture.span("orders.load");
    assert_eq!(span.kind(), SpanKind::Client);
    assert_eq!(
        span.attr_str("code.function.name").as_deref(),
        Some("args::load")
    );
    through_reexport();
    server();
    consumer();
    internal();
    assert_eq!(capture.span("through_reexport").kind(), SpanKind::Producer);
    assert_eq!(capture.span("server").kind(), SpanKind::Server);
    assert_eq!(capture.span("consumer").kind(), SpanKind::Consumer);
    assert_eq!(capture.span("internal").kind(), SpanKind::Internal);
}

#[test]
fn arguments_are_not_recorded_unless_asked() {
    let capture = Capture::install();
    let user = User {
        id: 42,
        email: "alice@example.com".into(),
    };
    assert_eq!(with_fields(&user, 9, "x".into()), "alice@example.com:9:x");
    assert!(login("bob", "hunter2"));
    assert_eq!(secret("tok".into()), 3);

    let span = capture.span("with_fields");
    assert_eq!(span.attr("user.id"), Some(&Value::I64(42)));
    assert_eq!(span.attr_str("tenant").as_deref(), Some("acme"));
    assert_eq!(span.attr("retries"), Some(&Value::I64(3)));
    assert_eq!(span.attr("ratio"), Some(&Value::F64(0.5)));
    assert_eq!(span.attr("vip"), Some(&Value::Bool(true)));
    assert_eq!(span.attr("order_id"), Some(&Value::I64(9)));
    assert_eq!(span.attr_str("label").as_deref(), Some("x"));
    // Only code.* and the chosen fields: no argument leaks in.
    let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.len(), 2 + 7, "{keys:?}");
    for span in capture.spans() {
        for kv in &span.attributes {
            let v = kv.value.to_string();
            assert!(!v.contains("alice@example.com") && !v.contains("hunter2"));
        }
    }
    let login = capture.span("login");
    assert_eq!(login.attr("name"), Some(&Value::I64(3)));
    let secret = capture.span("secret");
    assert_eq!(secret.attributes.len(), 2);
}
