//! The tower client layer against real loopback servers: spans, injection, metric, body end,
//! errors.

mod client_support;

use axum::Router;
use axum::routing::get as get_route;
use client_support::*;
use opentelemetry::context::FutureExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, global};
use tower::{ServiceBuilder, ServiceExt};
use tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS;
use tracewire_http::client::ClientLayer;
use tracewire_test::{Capture, PointValue, SpanDataExt};

async fn scripted_server(script: &Script) -> std::net::SocketAddr {
    serve(
        Router::new()
            .route("/users/{id}", get_route(scripted).post(scripted))
            .with_state(script.clone()),
    )
    .await
}

#[tokio::test]
async fn a_request_gets_a_client_span_and_carries_its_context() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = scripted_server(&script).await;
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(hyper_client());

    let parent = parent_context();
    let url = format!("http://127.0.0.1:{}/users/7?token=s3cret", addr.port());
    let response = client
        .oneshot(get(&url))
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        capture.spans_named("GET").is_empty(),
        "the span stays open until the body is read"
    );
    assert_eq!(read_body(response.into_body()).await, "ok");

    let span = capture.span("GET");
    assert_eq!(span.kind(), SpanKind::Client);
    assert_eq!(
        span.trace_id(),
        parent.span().span_context().trace_id().to_string()
    );
    assert_eq!(span.parent_id(), span_id_of(&parent));
    assert_eq!(span.attr_str("http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        span.attr_str("server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(span.attr_str("server.port"), Some(addr.port().to_string()));
    assert_eq!(
        span.attr_str("url.full"),
        Some(format!(
            "http://127.0.0.1:{}/users/7?token=REDACTED",
            addr.port()
        ))
    );
    assert_eq!(
        span.attr_str("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        span.attr_str("network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(span.attr("http.request.resend_count"), None);
    assert_eq!(span.attr("error.type"), None);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(script.traceparents(), [traceparent_of(&span)]);

    let points = capture.metric("http.client.request.duration");
    assert_eq!(points.len(), 1, "{points:?}");
    let point = &points[0];
    assert_eq!(point.unit, "s");
    assert_eq!(point.attr("http.request.method"), Some("GET"));
    assert_eq!(point.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        point.attr("server.port"),
        Some(addr.port().to_string().as_str())
    );
    assert_eq!(point.attr("http.response.status_code"), Some("200"));
    assert_eq!(point.attr("error.type"), None);
    match &point.value {
        PointValue::Histogram { count, bounds, .. } => {
            assert_eq!(*count, 1);
            assert_eq!(bounds.as_slice(), DURATION_BOUNDARIES_SECONDS.as_slice());
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn stale_propagation_headers_are_replaced() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = scripted_server(&script).await;
    let client = ClientLayer::new().layer_hyper();

    let mut request = get(&format!("http://127.0.0.1:{}/users/1", addr.port()));
    for stale in [
        "00-11111111111111111111111111111111-1111111111111111-01",
        "00-22222222222222222222222222222222-2222222222222222-01",
    ] {
        request
            .headers_mut()
            .append("traceparent", stale.parse().unwrap());
    }
    let response = client.oneshot(request).await.unwrap();
    read_body(response.into_body()).await;
    let span = capture.span("GET");
    assert_eq!(
        span.parent_id(),
        "0000000000000000",
        "no current span: a root"
    );
    assert_eq!(script.traceparents(), [traceparent_of(&span)]);
}

/// Lets the test build a layered hyper client in one expression.
trait LayerHyper {
    fn layer_hyper(
        &self,
    ) -> tracewire_http::client::Client<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
    >;
}

impl LayerHyper for ClientLayer {
    fn layer_hyper(
        &self,
    ) -> tracewire_http::client::Client<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
    > {
        tower::Layer::layer(self, hyper_client())
    }
}

#[tokio::test]
async fn dropping_the_body_ends_the_span_once() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = scripted_server(&script).await;
    let client = ClientLayer::new().layer_hyper();

    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/users/1", addr.port())))
        .await
        .unwrap();
    assert!(capture.spans_named("GET").is_empty());
    drop(response);
    assert_eq!(capture.spans_named("GET").len(), 1);
    let points = capture.metric("http.client.request.duration");
    assert_eq!(points[0].count_or_value(), 1.0);
}

#[tokio::test]
async fn error_statuses_set_error_type_and_status() {
    let capture = Capture::install();
    let script = Script::failing(1);
    let addr = scripted_server(&script).await;
    let client = ClientLayer::new().layer_hyper();

    let response = client
        .clone()
        .oneshot(get(&format!("http://127.0.0.1:{}/users/1", addr.port())))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    read_body(response.into_body()).await;
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/nowhere", addr.port())))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    read_body(response.into_body()).await;

    let spans = capture.spans_named("GET");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].attr_str("error.type").as_deref(), Some("503"));
    assert!(spans[0].is_error());
    assert_eq!(spans[1].attr_str("error.type").as_deref(), Some("404"));
    assert!(spans[1].is_error(), "4xx is an error on CLIENT spans");
    let mut error_types: Vec<_> = capture
        .metric("http.client.request.duration")
        .iter()
        .map(|p| p.attr("error.type").map(str::to_owned))
        .collect();
    error_types.sort();
    assert_eq!(error_types, [Some("404".into()), Some("503".into())]);
}

#[tokio::test]
async fn a_transport_error_is_recorded_and_returned_unchanged() {
    let capture = Capture::install();
    let port = closed_port();
    let client = ClientLayer::new().layer_hyper();

    let error = client
        .oneshot(get(&format!("http://127.0.0.1:{port}/users/1")))
        .await
        .unwrap_err();
    assert!(error.is_connect(), "the client's own error type: {error:?}");

    let span = capture.span("GET");
    assert_eq!(
        span.attr_str("error.type").as_deref(),
        Some("hyper_util::client::legacy::client::Error")
    );
    assert!(span.is_error());
    assert_eq!(span.attr("http.response.status_code"), None);
    let points = capture.metric("http.client.request.duration");
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0].attr("error.type"),
        Some("hyper_util::client::legacy::client::Error")
    );
    assert_eq!(points[0].attr("http.response.status_code"), None);
}

/// A propagator that produces a value and a name no HTTP header can hold.
#[derive(Debug)]
struct Unrepresentable;

impl TextMapPropagator for Unrepresentable {
    fn inject_context(&self, _cx: &Context, injector: &mut dyn Injector) {
        injector.set("x-bad-value", "line\nbreak".to_owned());
        injector.set("bad name", "v".to_owned());
        injector.set("x-good", "fine".to_owned());
    }

    fn extract_with_context(&self, cx: &Context, _extractor: &dyn Extractor) -> Context {
        cx.clone()
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        opentelemetry::propagation::text_map_propagator::FieldIter::new(&[])
    }
}

#[tokio::test]
async fn unrepresentable_propagation_values_are_skipped_and_counted() {
    let capture = Capture::install();
    global::set_text_map_propagator(Unrepresentable);
    let script = Script::default();
    let addr = scripted_server(&script).await;
    let client = ClientLayer::new().layer_hyper();

    let before = tracewire_core::propagation::rejected_total();
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/users/1", addr.port())))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_body(response.into_body()).await;
    assert_eq!(tracewire_core::propagation::rejected_total() - before, 2);
    let seen = script.seen.lock().unwrap();
    assert_eq!(seen[0].get("x-good").unwrap(), "fine");
    assert!(seen[0].get("x-bad-value").is_none());
    drop(seen);
    let rejected = capture.metric("tracewire.propagation.rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].attr("carrier"), Some("http"));
    assert_eq!(rejected[0].attr("reason"), Some("unrepresentable"));
    assert_eq!(rejected[0].count_or_value(), 2.0);
}

#[tokio::test]
async fn non_standard_methods_are_other() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = scripted_server(&script).await;
    let client = ClientLayer::new().layer_hyper();
    let request = http::Request::builder()
        .method("PURGE")
        .uri(format!("http://127.0.0.1:{}/users/1", addr.port()))
        .body(Default::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    read_body(response.into_body()).await;
    let span = capture.span("HTTP");
    assert_eq!(
        span.attr_str("http.request.method").as_deref(),
        Some("_OTHER")
    );
    assert_eq!(
        span.attr_str("http.request.method_original").as_deref(),
        Some("PURGE")
    );
}

#[tokio::test]
async fn a_failing_body_ends_the_span_once_with_the_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let capture = Capture::install();
    // A server that promises 100 bytes, sends 3 and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
            .await
            .unwrap();
    });
    let client = ClientLayer::new().layer_hyper();
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{port}/users/1")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let error = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("IncompleteBody"), "{error:?}");

    let span = capture.span("GET");
    assert!(span.is_error());
    assert_eq!(
        span.attr_str("error.type").as_deref(),
        Some("hyper::error::Error")
    );
    let points = capture.metric("http.client.request.duration");
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count_or_value(), 1.0, "recorded exactly once");
    assert_eq!(points[0].attr("error.type"), Some("hyper::error::Error"));
}

#[tokio::test]
async fn a_cancelled_request_still_ends_its_span() {
    let capture = Capture::install();
    let addr =
        serve(Router::new().route("/slow", get_route(std::future::pending::<&'static str>))).await;
    let client = ClientLayer::new().layer_hyper();
    let call = client.oneshot(get(&format!("http://127.0.0.1:{}/slow", addr.port())));
    // Cancelled by the timeout: the response future is dropped mid-flight.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), call)
            .await
            .is_err()
    );
    let span = capture.span("GET");
    assert_eq!(span.attr("http.response.status_code"), None);
    assert_eq!(
        capture.metric("http.client.request.duration")[0].count_or_value(),
        1.0
    );
}
