//! `ServerLayer` at its documented edges: the access log of a body that fails after a 2xx
//! head, the scrape route left out of the access log, `https(true)`, `X-Forwarded-For`, and the
//! request-id and `traceparent` size limits.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use common::{TRACE_ID, get, serve};
use opentelemetry::trace::Status;
use tracewire::http::ServerLayer;
use tracewire_test::{Capture, SpanDataExt};

fn app(layer: ServerLayer) -> Router {
    Router::new()
        .route("/ok", route_get(|| async { "ok" }))
        .route("/metrics", route_get(|| async { "# metrics" }))
        .route(
            "/broken",
            route_get(|| async {
                let chunks = futures_util::stream::unfold(0u8, |n| async move {
                    match n {
                        0 => Some((Ok("first\n".to_owned()), 1)),
                        1 => {
                            // Let the head and the first chunk leave before the failure.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("disk gone mid-stream")), 2))
                        }
                        _ => None,
                    }
                });
                Body::from_stream(chunks)
            }),
        )
        .layer(layer)
}

fn access_lines(capture: &Capture, path: &str) -> Vec<serde_json::Value> {
    capture
        .logs()
        .into_iter()
        .filter(|l| l["target"] == "tracewire::access" && l["path"] == path)
        .collect()
}

#[tokio::test]
async fn a_body_failing_after_a_2xx_head_is_a_warn_with_an_error_field() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client
        .get(format!("http://{addr}/broken").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let read = http_body_util::BodyExt::collect(response.into_body()).await;
    assert!(read.is_err(), "the client sees the broken stream");

    let spans = capture
        .wait_for_spans("GET /broken", 1, Duration::from_secs(5))
        .await;
    // axum wraps the stream's error in its own `axum::Error`, whose short name is recorded.
    let error_type = spans[0].attr_str("error.type").expect("error.type is set");
    assert_eq!(error_type, "Error");
    assert_eq!(spans[0].status, Status::error("disk gone mid-stream"));
    let lines = access_lines(&capture, "/broken");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["message"], "request failed");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["error"], error_type.as_str());
}

#[tokio::test]
async fn a_quiet_path_has_spans_but_no_access_log() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new().quiet_path("/metrics"))).await;
    get(&format!("http://{addr}/metrics"), &[]).await;
    get(&format!("http://{addr}/ok"), &[]).await;
    capture
        .wait_for_spans("GET /ok", 1, Duration::from_secs(5))
        .await;
    assert_eq!(capture.spans_named("GET /metrics").len(), 1);
    assert!(access_lines(&capture, "/metrics").is_empty());
    let ok = access_lines(&capture, "/ok");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["level"], "INFO");
}

#[tokio::test]
async fn https_and_forwarded_for_are_recorded() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new().https(true))).await;
    get(
        &format!("http://{addr}/ok"),
        &[("x-forwarded-for", "203.0.113.9, 10.0.0.1")],
    )
    .await;
    let span = capture.span("GET /ok");
    assert_eq!(span.attr_str("url.scheme").as_deref(), Some("https"));
    assert_eq!(
        span.attr_str("client.address").as_deref(),
        Some("203.0.113.9")
    );
    let scheme = capture
        .metric("http.server.request.duration")
        .iter()
        .filter_map(|p| p.attr("url.scheme").map(str::to_owned))
        .collect::<Vec<_>>();
    assert_eq!(scheme, ["https"]);
}

#[tokio::test]
async fn request_ids_are_kept_up_to_128_characters_with_dot_underscore_colon() {
    let _capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let url = format!("http://{addr}/ok");
    let at_limit = format!("a._:-{}", "b".repeat(123));
    assert_eq!(at_limit.len(), 128);
    let kept = get(&url, &[("x-request-id", &at_limit)]).await;
    assert_eq!(kept.headers["x-request-id"], at_limit.as_str());

    let over = format!("{at_limit}c");
    let replaced = get(&url, &[("x-request-id", &over)]).await;
    let fresh = replaced.headers["x-request-id"].to_str().unwrap();
    assert_ne!(fresh, over);
    assert_eq!(fresh.len(), 32);
    assert!(fresh.bytes().all(|b| b.is_ascii_hexdigit()));
}

fn too_long(capture: &Capture) -> f64 {
    capture
        .metric("tracewire.propagation.rejected")
        .iter()
        .filter(|p| p.attr("reason") == Some("too_long"))
        .map(|p| p.count_or_value())
        .sum()
}

#[tokio::test]
async fn traceparent_is_read_up_to_256_bytes() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let url = format!("http://{addr}/ok");
    // A future version may append fields: padded that way, the value stays valid.
    let base = format!("01-{TRACE_ID}-00f067aa0ba902b7-01-");
    let at_limit = format!("{base}{}", "a".repeat(256 - base.len()));
    let over = format!("{base}{}", "a".repeat(257 - base.len()));
    get(&url, &[("traceparent", &at_limit)]).await;
    capture
        .wait_for_spans("GET /ok", 1, Duration::from_secs(5))
        .await;
    assert_eq!(too_long(&capture), 0.0);
    assert_eq!(
        capture.span("GET /ok").trace_id(),
        TRACE_ID,
        "256 bytes are read"
    );
    get(&url, &[("traceparent", &over)]).await;
    let spans = capture
        .wait_for_spans("GET /ok", 2, Duration::from_secs(5))
        .await;
    assert_eq!(
        too_long(&capture),
        1.0,
        "257 bytes are rejected and counted"
    );
    assert_eq!(spans.iter().filter(|s| s.trace_id() == TRACE_ID).count(), 1);
}

#[tokio::test]
async fn other_propagation_values_are_read_up_to_8192_bytes() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let url = format!("http://{addr}/ok");
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let at_limit = format!("k={}", "a".repeat(8190));
    let over = format!("k={}", "a".repeat(8191));
    get(
        &url,
        &[("traceparent", &traceparent), ("tracestate", &at_limit)],
    )
    .await;
    capture
        .wait_for_spans("GET /ok", 1, Duration::from_secs(5))
        .await;
    assert_eq!(too_long(&capture), 0.0, "8192 bytes are within the limit");
    get(
        &url,
        &[("traceparent", &traceparent), ("tracestate", &over)],
    )
    .await;
    capture
        .wait_for_spans("GET /ok", 2, Duration::from_secs(5))
        .await;
    assert_eq!(
        too_long(&capture),
        1.0,
        "8193 bytes are rejected and counted"
    );
}
