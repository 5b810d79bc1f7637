//! `ServerLayer` end to end over real sockets: spans, attributes, propagation, headers,
//! metrics, logs and redaction, as a user of an axum service would observe them.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get as route_get;
use common::{PARENT_ID, TRACE_ID, TRACEPARENT, get, serve, trace_id_of};
use opentelemetry::trace::SpanKind;
use tracewire::http::ServerLayer;
use tracewire_test::{Capture, PointValue, SpanDataExt};

const SECRET: &str = "s3cr3t-t0ken-value";

async fn user(axum::extract::Path(id): axum::extract::Path<u64>) -> String {
    tracing::info!(user_id = id, "loading user");
    format!("{{\"id\":{id}}}")
}

fn app(layer: ServerLayer) -> Router {
    Router::new()
        .route("/users/{id}", route_get(user))
        .route(
            "/fail",
            route_get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/secret",
            route_get(|headers: HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                tracing::info!(authorization = %auth, cookie = "c", "handler saw credentials");
                ([("set-cookie", format!("session={SECRET}"))], "ok")
            }),
        )
        .route(
            "/stream",
            route_get(|| async {
                let chunks = futures_util::stream::unfold(0u8, |n| async move {
                    if n == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    tracing::info!(chunk = n, "sending chunk");
                    Some((Ok::<_, std::io::Error>(format!("chunk{n}\n")), n + 1))
                });
                Body::from_stream(chunks)
            }),
        )
        .route(
            "/panic",
            route_get(|| async {
                if true {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        )
        .layer(layer)
}

#[tokio::test]
async fn incoming_traceparent_is_the_parent_and_attributes_follow_semconv() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;

    let answer = get(
        &format!("http://{addr}/users/7?token=abc&page=2"),
        &[
            ("traceparent", TRACEPARENT),
            ("baggage", "tenant=acme"),
            ("user-agent", "tracewire-test/1.0"),
            ("x-request-id", "req-abc-123"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "{\"id\":7}");

    let span = capture.span("GET /users/{id}");
    assert_eq!(span.kind(), SpanKind::Server);
    assert_eq!(span.trace_id(), TRACE_ID);
    assert_eq!(span.parent_id(), PARENT_ID);
    assert!(span.parent_span_is_remote);

    // The response names the server span, in the same trace.
    let traceparent = answer.headers["traceparent"].to_str().unwrap();
    assert_eq!(trace_id_of(traceparent), TRACE_ID);
    assert_eq!(traceparent.split('-').nth(2).unwrap(), span.span_id());
    assert!(
        answer.headers.get("baggage").is_none(),
        "baggage is never echoed"
    );
    assert_eq!(answer.headers["x-request-id"], "req-abc-123");

    let expect = [
        ("http.request.method", "GET".to_string()),
        ("http.route", "/users/{id}".to_string()),
        ("url.path", "/users/7".to_string()),
        ("url.query", "token=REDACTED&page=REDACTED".to_string()),
        ("url.scheme", "http".to_string()),
        ("server.address", "127.0.0.1".to_string()),
        ("server.port", addr.port().to_string()),
        ("network.protocol.version", "1.1".to_string()),
        ("user_agent.original", "tracewire-test/1.0".to_string()),
        ("client.address", "127.0.0.1".to_string()),
        ("http.response.status_code", "200".to_string()),
        ("http.request.id", "req-abc-123".to_string()),
    ];
    for (key, value) in expect {
        assert_eq!(span.attr_str(key).as_deref(), Some(value.as_str()), "{key}");
    }
    assert!(span.attr("error.type").is_none());
    assert!(!span.is_error());

    // The handler's log line and the access log carry the trace, the span and the request id.
    let logs = capture.logs();
    let handler = logs
        .iter()
        .find(|l| l["message"] == "loading user")
        .expect("handler log line");
    assert_eq!(handler["trace_id"], TRACE_ID);
    assert_eq!(handler["span_id"], span.span_id().as_str());
    assert_eq!(handler["request_id"], "req-abc-123");
    assert_eq!(handler["user_id"], 7);
    let access: Vec<_> = logs
        .iter()
        .filter(|l| l["target"] == "tracewire::access")
        .collect();
    assert_eq!(access.len(), 1, "one access-log line per request");
    assert_eq!(access[0]["trace_id"], TRACE_ID);
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["route"], "/users/{id}");
    assert_eq!(access[0]["path"], "/users/7");
    assert_eq!(access[0]["method"], "GET");
    assert!(access[0]["duration_ms"].as_f64().unwrap() >= 0.0);

    // Metrics: one request in the route's histogram, none left active.
    let duration = capture.metric("http.server.request.duration");
    let point = duration
        .iter()
        .find(|p| p.attr("http.route") == Some("/users/{id}"))
        .expect("route histogram point");
    assert_eq!(point.unit, "s");
    assert_eq!(point.attr("http.request.method"), Some("GET"));
    assert_eq!(point.attr("http.response.status_code"), Some("200"));
    assert_eq!(point.attr("url.scheme"), Some("http"));
    assert_eq!(point.attr("error.type"), None);
    match &point.value {
        PointValue::Histogram { count, bounds, .. } => {
            assert_eq!(*count, 1);
            assert_eq!(
                bounds,
                &[
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
                ]
            );
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
    let active = capture.metric("http.server.active_requests");
    assert!(!active.is_empty());
    assert!(
        active.iter().all(|p| p.count_or_value() == 0.0),
        "{active:?}"
    );
}

#[tokio::test]
async fn bad_propagation_headers_start_a_fresh_trace_and_never_fail_the_request() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let before = tracewire::propagation::rejected_total();

    let huge_baggage = format!("k={}", "v".repeat(10_000));
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("traceparent", "00-not-a-trace-01")],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        vec![
            ("traceparent", TRACEPARENT),
            ("baggage", huge_baggage.as_str()),
        ],
    ];
    for headers in &cases {
        let answer = get(&format!("http://{addr}/users/1"), headers).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let spans = capture.spans_named("GET /users/{id}");
    assert_eq!(spans.len(), 3);
    for span in &spans[..2] {
        assert_ne!(span.trace_id(), TRACE_ID);
        assert_ne!(span.trace_id(), "00000000000000000000000000000000");
        assert_eq!(span.parent_id(), "0000000000000000", "a fresh root span");
    }
    // An oversized baggage header is dropped, the valid traceparent beside it still counts.
    assert_eq!(spans[2].trace_id(), TRACE_ID);
    assert_eq!(tracewire::propagation::rejected_total() - before, 3);

    // A traceparent that is not text is counted once, as not_utf8.
    let before = tracewire::propagation::rejected_total();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{addr}/users/1"))
        .header(
            "traceparent",
            http::HeaderValue::from_bytes(b"00-\xe9\xe9-01").unwrap(),
        )
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(tracewire::propagation::rejected_total() - before, 1);
    let rejected = capture.metric("tracewire.propagation.rejected");
    let by_reason = |reason: &str| {
        rejected
            .iter()
            .filter(|p| p.attr("reason") == Some(reason) && p.attr("carrier") == Some("http"))
            .map(|p| p.count_or_value())
            .sum::<f64>()
    };
    assert_eq!(by_reason("malformed"), 2.0);
    assert_eq!(by_reason("too_long"), 1.0);
    assert_eq!(by_reason("not_utf8"), 1.0);
}

#[tokio::test]
async fn unmatched_routes_are_named_by_method_and_5xx_is_an_error() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;

    assert_eq!(
        get(&format!("http://{addr}/nowhere"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let span = capture.span("GET");
    assert!(span.attr("http.route").is_none());
    assert_eq!(
        span.attr_str("http.response.status_code").as_deref(),
        Some("404")
    );
    assert!(!span.is_error(), "4xx is not a server error");

    assert_eq!(
        get(&format!("http://{addr}/fail"), &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let span = capture.span("GET /fail");
    assert!(span.is_error());
    assert_eq!(span.attr_str("error.type").as_deref(), Some("500"));
    let point = capture
        .metric("http.server.request.duration")
        .into_iter()
        .find(|p| p.attr("http.route") == Some("/fail"))
        .unwrap();
    assert_eq!(point.attr("error.type"), Some("500"));
    let access = capture
        .logs()
        .into_iter()
        .find(|l| l["target"] == "tracewire::access" && l["path"] == "/fail")
        .unwrap();
    assert_eq!(access["level"], "WARN");
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_generated_otherwise() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let long = "x".repeat(200);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let answer = get(&format!("http://{addr}/users/1"), &[("x-request-id", bad)]).await;
        let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let spans = capture.spans_named("GET /users/{id}");
    let ids: std::collections::HashSet<_> = spans
        .iter()
        .map(|s| s.attr_str("http.request.id"))
        .collect();
    assert_eq!(ids.len(), 3, "every request gets its own id");
}

#[tokio::test]
async fn sensitive_values_never_reach_spans_logs_or_metrics() {
    let capture = Capture::install();
    let layer = ServerLayer::new()
        .record_request_header("Authorization")
        .record_request_header("x-tenant")
        .record_request_header("not a header");
    let addr = serve(app(layer)).await;

    let bearer = format!("Bearer {SECRET}");
    let cookie = format!("session={SECRET}");
    let answer = get(
        &format!("http://{addr}/secret?api_key={SECRET}"),
        &[
            ("authorization", bearer.as_str()),
            ("cookie", cookie.as_str()),
            ("x-api-key", SECRET),
            ("proxy-authorization", SECRET),
            ("x-tenant", "acme"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);

    let span = capture.span("GET /secret");
    assert_eq!(
        span.attr_str("http.request.header.authorization")
            .as_deref(),
        Some("[\"REDACTED\"]")
    );
    assert_eq!(
        span.attr_str("http.request.header.x-tenant").as_deref(),
        Some("[\"acme\"]")
    );
    for s in capture.spans() {
        for kv in &s.attributes {
            assert!(
                !kv.value.to_string().contains(SECRET),
                "span attribute {kv:?}"
            );
        }
    }
    let raw = capture.raw_logs();
    assert!(raw.contains("handler saw credentials"));
    assert!(!raw.contains(SECRET), "a log line leaked the secret: {raw}");
    for point in capture.metrics() {
        assert!(!format!("{point:?}").contains(SECRET));
    }
}

#[tokio::test]
async fn streaming_responses_are_measured_to_the_last_byte() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;

    let started = std::time::Instant::now();
    let answer = get(&format!("http://{addr}/stream"), &[]).await;
    assert_eq!(answer.body, "chunk0\nchunk1\nchunk2\n");
    assert!(started.elapsed() >= Duration::from_millis(450));

    let span = capture.span("GET /stream");
    let span_duration = span.end_time.duration_since(span.start_time).unwrap();
    assert!(
        span_duration >= Duration::from_millis(440),
        "span ended before the body was sent: {span_duration:?}"
    );
    let PointValue::Histogram { sum, count, .. } = &capture
        .metric("http.server.request.duration")
        .into_iter()
        .find(|p| p.attr("http.route") == Some("/stream"))
        .unwrap()
        .value
    else {
        panic!("histogram expected")
    };
    assert_eq!(*count, 1);
    assert!(
        *sum >= 0.44,
        "duration recorded before the body ended: {sum}"
    );
    // Log lines written while the body streams still carry the request's trace.
    let chunk_logs: Vec<_> = capture
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "sending chunk")
        .collect();
    assert_eq!(chunk_logs.len(), 3);
    for l in chunk_logs {
        assert_eq!(l["trace_id"], span.trace_id().as_str());
        assert_eq!(l["span_id"], span.span_id().as_str());
    }
}

#[tokio::test]
async fn a_panicking_handler_ends_its_span_as_an_error() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let result = client
        .get(format!("http://{addr}/panic").parse().unwrap())
        .await;
    assert!(result.is_err(), "the connection is dropped by the panic");
    let spans = capture
        .wait_for_spans("GET /panic", 1, Duration::from_secs(5))
        .await;
    assert_eq!(spans.len(), 1);
    assert!(spans[0].is_error());
    assert_eq!(spans[0].attr_str("error.type").as_deref(), Some("panic"));
    let active = capture.metric("http.server.active_requests");
    assert!(
        active.iter().all(|p| p.count_or_value() == 0.0),
        "{active:?}"
    );
}

#[tokio::test]
async fn inner_service_errors_are_recorded_and_returned_unchanged() {
    use tower::{Layer, ServiceExt};
    let capture = Capture::install();
    let failing = tower::service_fn(|_req: http::Request<Body>| async {
        Err::<http::Response<Body>, _>(std::io::Error::other("upstream reset"))
    });
    let service = ServerLayer::new().layer(failing);
    let err = service
        .oneshot(
            http::Request::get("/thing")
                .header("traceparent", TRACEPARENT)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "upstream reset");
    let span = capture.span("GET");
    assert_eq!(span.trace_id(), TRACE_ID);
    assert!(span.is_error());
    assert_eq!(
        span.attr_str("error.type").as_deref(),
        Some("std::io::error::Error")
    );
    match &span.status {
        opentelemetry::trace::Status::Error { description } => {
            assert_eq!(description, "upstream reset")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn http2_requests_record_protocol_and_authority() {
    let capture = Capture::install();
    let addr = serve(app(ServerLayer::new())).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{addr}/users/9"))
        .header("traceparent", TRACEPARENT)
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let tp = resp.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(trace_id_of(&tp), TRACE_ID);

    let span = capture.span("GET /users/{id}");
    assert_eq!(span.parent_id(), PARENT_ID);
    assert_eq!(
        span.attr_str("network.protocol.version").as_deref(),
        Some("2")
    );
    assert_eq!(
        span.attr_str("server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(span.attr_str("server.port"), Some(addr.port().to_string()));
    assert_eq!(span.attr_str("url.scheme").as_deref(), Some("http"));
}

/// What a handler and its client see of a request's trace: the current span context, and
/// that of a span it starts.
async fn trace_view() -> String {
    use opentelemetry::trace::{TraceContextExt, Tracer};
    let cx = opentelemetry::Context::current();
    let server = cx.span().span_context().clone();
    let child = opentelemetry::global::tracer("handler").start_with_context("child", &cx);
    let child = opentelemetry::trace::Span::span_context(&child).clone();
    format!(
        "{} {} {} {} {} | {} {} {} {}",
        server.trace_id(),
        server.span_id(),
        server.trace_flags().to_u8(),
        server.is_remote(),
        server.trace_state().header(),
        child.trace_id(),
        child.trace_flags().to_u8(),
        child.is_remote(),
        child.trace_state().header(),
    )
}

#[tokio::test]
async fn an_unsampled_parent_under_a_parent_based_sampler_is_followed_with_or_without_the_shortcut()
{
    let capture = Capture::install();
    let unsampled = format!("00-{TRACE_ID}-{PARENT_ID}-00");
    let mut seen = Vec::new();
    for parent_based in [false, true] {
        // Told the sampler is parent-based, the layer builds the dropped span's context
        // itself, without an SDK span: what the handler, the response and the next hop see is
        // the same.
        tracewire_core::provider::set_parent_based_sampler(parent_based);
        let app = Router::new()
            .route("/view", route_get(trace_view))
            .layer(ServerLayer::new());
        let addr = serve(app).await;
        let answer = get(
            &format!("http://{addr}/view"),
            &[
                ("traceparent", &unsampled),
                ("tracestate", "vendor=abc,ot=th:8"),
            ],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        let traceparent = answer.headers["traceparent"].to_str().unwrap().to_owned();
        let (head, tail) = answer.body.split_once(' ').unwrap();
        let (span_id, tail) = tail.split_once(' ').unwrap();
        assert_eq!(head, TRACE_ID);
        assert_ne!(span_id, PARENT_ID, "the server span has its own id");
        assert_eq!(traceparent, format!("00-{TRACE_ID}-{span_id}-00"));
        assert_eq!(
            tail,
            format!("0 false vendor=abc,ot=th:8 | {TRACE_ID} 0 false vendor=abc,ot=th:8")
        );
        seen.push(tail.to_owned());
    }
    assert_eq!(seen[0], seen[1]);
    assert!(
        capture.spans().is_empty(),
        "nothing of an unsampled trace is exported"
    );
}
