//! The quickstart binary exporting every signal the way hosted backends require: OTLP over
//! TLS (a CA of the test's own, client certificates), headers, gzip, log records over OTLP,
//! the `tracing` span bridge, and other propagation formats.

mod common;

use std::time::{Duration, Instant};

use common::process::Service;
use common::{PARENT_ID, TRACE_ID, TRACEPARENT, get, wait_for_dropped};
use tracewire_test::{OtlpReceiver, ReceivedLog, ReceivedRequest, ReceivedSpan};

fn quickstart(env: &[(&str, &str)]) -> Service {
    Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        env,
    )
}

fn path(p: Option<&std::path::Path>) -> &str {
    p.and_then(|p| p.to_str()).expect("TLS file")
}

/// Waits until every signal has arrived at least once and the request's records are there.
async fn wait_for_all_signals(receiver: &OtlpReceiver) -> Vec<ReceivedRequest> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let requests = receiver.requests();
        let has = |signal| requests.iter().any(|r| r.signal == signal);
        let request_logs = receiver
            .logs()
            .iter()
            .filter(|l| l.trace_id == TRACE_ID)
            .count();
        if (has("traces") && has("metrics") && has("logs") && request_logs >= 3)
            || Instant::now() > deadline
        {
            return requests;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}

fn log<'a>(logs: &'a [ReceivedLog], body: &str) -> &'a ReceivedLog {
    logs.iter()
        .find(|l| l.body == body)
        .unwrap_or_else(|| panic!("no log record {body:?}: {logs:#?}"))
}

/// Serves `GET /users/7` inside the incoming trace and checks what the receiver got.
async fn request_and_check(receiver: &OtlpReceiver, app: &Service, grpc: bool) {
    let answer = get(&app.url("/users/7"), &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(answer.status, 200);
    let server_span_id = answer.headers["traceparent"]
        .to_str()
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_owned();

    let requests = wait_for_all_signals(receiver).await;
    for signal in ["traces", "metrics", "logs"] {
        assert!(
            requests.iter().any(|r| r.signal == signal),
            "no {signal} export arrived: {requests:#?}"
        );
    }
    // Every export: over TLS, on the expected transport, gzip-compressed, with the header.
    for request in &requests {
        assert!(request.tls, "{request:?}");
        assert_eq!(request.grpc, grpc, "{request:?}");
        assert!(request.gzip, "not gzip-compressed: {request:?}");
        assert_eq!(
            request.headers.get("x-tenant").map(String::as_str),
            Some("acme"),
            "{request:?}"
        );
    }

    // The #[tracing::instrument] function's span: in the request's trace, under the server
    // span, its field an attribute and its event a span event.
    let spans = receiver.wait_for_spans(4, Duration::from_secs(10)).await;
    let server = span(&spans, "GET /users/{id}");
    assert_eq!(server.trace_id, TRACE_ID);
    assert_eq!(server.parent_span_id, PARENT_ID);
    assert_eq!(server.span_id, server_span_id);
    let roles = span(&spans, "load_roles");
    assert_eq!(roles.trace_id, TRACE_ID);
    assert_eq!(roles.parent_span_id, server.span_id);
    assert_eq!(roles.kind, 1, "INTERNAL");
    assert_eq!(roles.attributes["user.id"], "7");
    assert_eq!(roles.scope, "tracewire.tracing");
    // tracewire's own #[traced] span is still the server span's child too.
    assert_eq!(span(&spans, "load_user").parent_span_id, server.span_id);

    // Log records of the request carry its trace; the one inside the tracing span carries
    // that span's id.
    let logs = receiver.logs();
    let loading = log(&logs, "loading user");
    assert_eq!(loading.trace_id, TRACE_ID);
    assert_eq!(loading.span_id, server.span_id);
    assert_eq!(loading.severity_text, "INFO");
    assert_eq!(loading.severity_number, 9);
    assert_eq!(loading.attributes["user_id"], "7");
    assert_eq!(loading.resource["service.name"], "quickstart-export");
    let looked_up = log(&logs, "roles looked up");
    assert_eq!(looked_up.trace_id, TRACE_ID);
    assert_eq!(looked_up.span_id, roles.span_id);
    // The derived event arrives with its name and fields, personal data redacted.
    let viewed = logs
        .iter()
        .find(|l| l.attributes.get("event.name").map(String::as_str) == Some("user.viewed"))
        .unwrap_or_else(|| panic!("no user.viewed record: {logs:#?}"));
    assert_eq!(viewed.trace_id, TRACE_ID);
    assert_eq!(viewed.attributes["event.version"], "1");
    assert_eq!(viewed.attributes["user_id"], "7");
    assert_eq!(viewed.attributes["email"], "REDACTED");
    // The pipeline's own libraries never export their logs (no feedback loop).
    for record in &logs {
        assert!(
            !tracewire::bridge::is_pipeline_target(&record.scope),
            "pipeline log exported: {record:?}"
        );
    }

    // JSON lines on stdout still run beside OTLP logs.
    assert!(
        app.logs()
            .iter()
            .any(|l| l["message"] == "loading user" && l["trace_id"] == TRACE_ID)
    );
    assert!(
        receiver
            .metric_names()
            .iter()
            .any(|m| m == "http.server.request.duration"),
        "{:?}",
        receiver.metric_names()
    );
}

/// The "done when" of OTLP over TLS: `http/protobuf` to an `https://` receiver trusted
/// through `OTEL_EXPORTER_OTLP_CERTIFICATE`, a tenant header, gzip, OTLP logs and the
/// `tracing` bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http_protobuf_with_ca_headers_gzip_logs_and_tracing_spans() {
    let receiver = OtlpReceiver::start_tls().await;
    let endpoint = receiver.http_endpoint();
    assert!(endpoint.starts_with("https://"));
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(receiver.ca_file())),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("TRACEWIRE_TRACING_SPANS", "true"),
        ("OTEL_SERVICE_NAME", "quickstart-export"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
    ]);
    request_and_check(&receiver, &app, false).await;
    let status = app.terminate();
    assert!(status.success(), "quickstart exited with {status}");
}

/// gRPC over TLS with a client certificate the receiver requires, settings given per signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_mutual_tls_with_per_signal_settings() {
    let receiver = OtlpReceiver::start_mutual_tls().await;
    let endpoint = receiver.grpc_endpoint();
    let (ca, cert, key) = (
        path(receiver.ca_file()),
        path(receiver.client_cert_file()),
        path(receiver.client_key_file()),
    );
    let mut env: Vec<(String, String)> = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
        ("OTEL_LOGS_EXPORTER".into(), "otlp".into()),
        ("TRACEWIRE_TRACING_SPANS".into(), "true".into()),
        ("OTEL_SERVICE_NAME".into(), "quickstart-export".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "200".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_BLRP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    for signal in ["TRACES", "METRICS", "LOGS"] {
        for (setting, value) in [
            ("CERTIFICATE", ca),
            ("CLIENT_CERTIFICATE", cert),
            ("CLIENT_KEY", key),
            ("HEADERS", "x-tenant=acme"),
            ("COMPRESSION", "gzip"),
        ] {
            env.push((
                format!("OTEL_EXPORTER_OTLP_{signal}_{setting}"),
                value.into(),
            ));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = quickstart(&env);
    request_and_check(&receiver, &app, true).await;
    let status = app.terminate();
    assert!(status.success(), "quickstart exited with {status}");
}

/// Without the client certificate, the mutual-TLS receiver accepts nothing: the exports
/// fail (and are counted), the service keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_the_client_certificate_delivers_nothing() {
    let receiver = OtlpReceiver::start_mutual_tls().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(receiver.ca_file())),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    assert_eq!(get(&app.url("/users/7"), &[]).await.status, 200);
    let failed = wait_for_dropped(&app.url("/metrics"), "spans", "export_failed").await;
    assert!(failed >= 1, "no failed export counted");
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
    let status = app.terminate();
    assert!(status.success(), "quickstart exited with {status}");
}

/// `OTEL_PROPAGATORS=b3multi`: an incoming `X-B3-TraceId` becomes the server span's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3multi_headers_continue_the_trace() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_PROPAGATORS", "b3multi"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let answer = get(
        &app.url("/users/7"),
        &[
            ("X-B3-TraceId", TRACE_ID),
            ("X-B3-SpanId", PARENT_ID),
            ("X-B3-Sampled", "1"),
            // Not a configured propagator: ignored.
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await;
    let server = span(&spans, "GET /users/{id}");
    assert_eq!(server.trace_id, TRACE_ID);
    assert_eq!(server.parent_span_id, PARENT_ID);
    // The JSON lines of the request carry the B3 trace id.
    assert!(
        app.logs()
            .iter()
            .any(|l| l["message"] == "loading user" && l["trace_id"] == TRACE_ID)
    );
    let status = app.terminate();
    assert!(status.success(), "quickstart exited with {status}");
}
