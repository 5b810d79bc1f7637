//! The chain a user sees in exported spans: the `ServerLayer` SERVER span → a `#[traced]`
//! handler helper → a nested `#[traced]` function, one trace continuing the caller's
//! `traceparent`, with log lines from the nested body stamped with its span.

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::trace::SpanKind;
use tower::ServiceExt;
use tracewire::http::ServerLayer;
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[derive(Debug)]
struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("order not found")
    }
}

#[traced(fields(order.id = id))]
async fn load_order(id: u64) -> Result<String, NotFound> {
    let price = price_of(id).await?;
    Ok(format!("{{\"id\":{id},\"price\":{price}}}"))
}

#[traced]
async fn price_of(id: u64) -> Result<u64, NotFound> {
    tracing::info!(order_id = id, "pricing");
    if id == 0 { Err(NotFound) } else { Ok(id * 100) }
}

async fn handler(Path(id): Path<u64>) -> Result<String, http::StatusCode> {
    load_order(id)
        .await
        .map_err(|_| http::StatusCode::NOT_FOUND)
}

#[tokio::test]
async fn server_span_then_traced_then_nested_traced() {
    let capture = Capture::install();
    let app = Router::new()
        .route("/orders/{id}", get(handler))
        .layer(ServerLayer::new());
    let request = Request::get("/orders/7")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"id":7,"price":700}"#);

    let server = capture.span("GET /orders/{id}");
    let load = capture.span("load_order");
    let price = capture.span("price_of");
    assert_eq!(server.kind(), SpanKind::Server);
    assert_eq!(server.trace_id(), TRACE_ID);
    assert_eq!(server.parent_id(), PARENT_ID);
    assert_eq!(load.trace_id(), TRACE_ID);
    assert_eq!(load.parent_id(), server.span_id());
    assert_eq!(price.trace_id(), TRACE_ID);
    assert_eq!(price.parent_id(), load.span_id());
    assert_eq!(load.attr("order.id"), Some(&opentelemetry::Value::I64(7)));

    let line = capture
        .logs()
        .into_iter()
        .find(|l| l["message"] == "pricing")
        .expect("log line from the nested body");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"], price.span_id().as_str());
}

#[tokio::test]
async fn an_error_deep_in_the_chain_marks_both_functions() {
    let capture = Capture::install();
    let app = Router::new()
        .route("/orders/{id}", get(handler))
        .layer(ServerLayer::new());
    let response = app
        .oneshot(Request::get("/orders/0").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let _ = response.into_body().collect().await.unwrap();
    let server = capture.span("GET /orders/{id}");
    let load = capture.span("load_order");
    let price = capture.span("price_of");
    assert_eq!(price.parent_id(), load.span_id());
    assert_eq!(load.parent_id(), server.span_id());
    assert!(price.is_error() && load.is_error());
    assert_eq!(price.attr_str("error.type").as_deref(), Some("NotFound"));
    assert_eq!(load.attr_str("error.type").as_deref(), Some("NotFound"));
}
