//! The builder's explicit OTLP settings and sampling, checked against a real OTLP receiver.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{TRACE_ID, TRACEPARENT, get as http_get, serve, trace_id_of};
use opentelemetry_sdk::trace::Sampler;
use tracewire_test::OtlpReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_endpoint_and_unsampled_requests() {
    let receiver = OtlpReceiver::start().await;
    let telemetry = tracewire::builder()
        .service_name("builder-test")
        .otlp_endpoint(receiver.http_endpoint())
        .otlp_protocol(tracewire::OtlpProtocol::HttpProtobuf)
        .sampler(Sampler::TraceIdRatioBased(0.0))
        .log_writer(std::io::sink)
        .init()
        .expect("init");
    assert_eq!(telemetry.otlp_enabled(), (true, true));

    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .layer(tracewire::http::ServerLayer::new());
    let addr = serve(app).await;

    // Unsampled root: the response still names a (non-sampled) span, nothing is exported,
    // and the request still counts in the metrics.
    let answer = http_get(&format!("http://{addr}/ping"), &[]).await;
    assert_eq!(answer.status, 200);
    let tp = answer.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(tp.ends_with("-00"), "unsampled flag expected: {tp}");

    // With a plain ratio sampler (not parent-based) even a sampled incoming parent does not
    // make the server span sampled: the trace continues, nothing is exported.
    let answer = http_get(
        &format!("http://{addr}/ping"),
        &[("traceparent", TRACEPARENT)],
    )
    .await;
    assert_eq!(
        trace_id_of(answer.headers["traceparent"].to_str().unwrap()),
        TRACE_ID
    );

    telemetry.flush();
    let metrics = telemetry.metrics_service().render();
    assert!(metrics.contains("http_server_request_duration_seconds_count"));
    assert!(
        metrics.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_count")
                && l.contains("http_route=\"/ping\"")
                && l.ends_with(" 2")
        ),
        "{metrics}"
    );
    assert!(
        receiver
            .wait_for_metric("http.server.request.duration", Duration::from_secs(10))
            .await
    );
    assert!(receiver.spans().is_empty(), "unsampled spans were exported");
    telemetry.shutdown().unwrap();
}
