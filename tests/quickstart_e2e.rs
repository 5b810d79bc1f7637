//! The quickstart binary, run as a user runs it: real process, real sockets, `OTEL_*`
//! environment, an OTLP receiver decoding what arrives, SIGTERM to stop.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Service;
use common::{PARENT_ID, TRACE_ID, TRACEPARENT, get, trace_id_of, wait_for_dropped};
use serde_json::Value;
use tracewire_test::OtlpReceiver;

struct Quickstart;

impl Quickstart {
    fn start(env: &[(&str, &str)]) -> Service {
        Service::start(
            env!("CARGO_BIN_EXE_quickstart"),
            "quickstart listening",
            env,
        )
    }
}

async fn done_when(protocol: &str) {
    let receiver = OtlpReceiver::start().await;
    let endpoint = if protocol == "grpc" {
        receiver.grpc_endpoint()
    } else {
        receiver.http_endpoint()
    };
    let app = Quickstart::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_SERVICE_NAME", "quickstart-e2e"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ]);
    let pid = app.child.id().to_string();

    // curl -H 'traceparent: …' /users/7 answers in the same trace.
    let answer = get(&app.url("/users/7"), &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["id"], 7);
    let traceparent = answer.headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(trace_id_of(&traceparent), TRACE_ID);
    let server_span_id = traceparent.split('-').nth(2).unwrap().to_owned();

    assert_eq!(get(&app.url("/fail"), &[]).await.status, 500);

    // /metrics shows the route's histogram.
    let metrics = get(&app.url("/metrics"), &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_bucket")
                && l.contains("http_route=\"/users/{id}\"")
                && l.contains("http_response_status_code=\"200\"")
        ),
        "no route histogram in /metrics:\n{}",
        metrics.body
    );
    assert!(metrics.body.contains("http_server_active_requests"));
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("function_calls_total")
                && l.contains("function=\"load_user\"")
                && l.contains("result=\"ok\"")),
        "no #[traced] call metric in /metrics:\n{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("function_calls_total")
                && l.contains("function=\"check_database\"")
                && l.contains("result=\"error\""))
    );

    // The log lines of that request carry its trace id.
    let deadline = Instant::now() + Duration::from_secs(5);
    let request_logs = loop {
        let logs: Vec<Value> = app
            .logs()
            .into_iter()
            .filter(|l| l["trace_id"] == TRACE_ID)
            .collect();
        if logs.len() >= 2 || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let handler = request_logs
        .iter()
        .find(|l| l["message"] == "loading user")
        .expect("handler line");
    assert_eq!(handler["span_id"], server_span_id.as_str());
    assert_eq!(handler["service.name"], "quickstart-e2e");
    assert!(handler["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(
        request_logs
            .iter()
            .any(|l| l["target"] == "tracewire::access" && l["status"] == 200)
    );

    // The exported server span has the incoming span as parent, and the resource is right.
    let spans = receiver.wait_for_spans(6, Duration::from_secs(15)).await;
    let server = spans
        .iter()
        .find(|s| s.name == "GET /users/{id}")
        .unwrap_or_else(|| panic!("server span not exported: {spans:?}"));
    assert_eq!(server.trace_id, TRACE_ID);
    assert_eq!(server.parent_span_id, PARENT_ID);
    assert_eq!(server.span_id, server_span_id);
    assert_eq!(server.kind, 2, "SERVER");
    assert_eq!(server.grpc, protocol == "grpc");
    assert_eq!(server.scope, "tracewire");
    assert_eq!(server.attributes["http.route"], "/users/{id}");
    assert_eq!(server.resource["service.name"], "quickstart-e2e");
    assert_eq!(
        server.resource["service.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(server.resource["process.pid"], pid);
    assert_eq!(server.resource["deployment.environment.name"], "test");
    assert_eq!(server.resource["service.instance.id"].len(), 32);
    assert!(!server.resource["host.name"].is_empty());
    let fail = spans.iter().find(|s| s.name == "GET /fail").unwrap();
    assert_eq!(fail.status_code, 2, "ERROR");
    assert_eq!(fail.attributes["error.type"], "500");

    // #[traced] functions: server span → load_user → fetch_profile, errors recorded.
    let load = spans
        .iter()
        .find(|s| s.name == "load_user")
        .expect("load_user span");
    assert_eq!(load.trace_id, TRACE_ID);
    assert_eq!(load.parent_span_id, server_span_id);
    assert_eq!(load.kind, 1, "INTERNAL");
    assert_eq!(load.attributes["user.id"], "7");
    assert!(load.attributes["code.function.name"].ends_with("load_user"));
    let fetch = spans
        .iter()
        .find(|s| s.name == "fetch_profile")
        .expect("fetch_profile span");
    assert_eq!(fetch.trace_id, TRACE_ID);
    assert_eq!(fetch.parent_span_id, load.span_id);
    let db = spans
        .iter()
        .find(|s| s.name == "check_database")
        .expect("check_database span");
    assert_eq!(db.parent_span_id, fail.span_id);
    assert_eq!(db.status_code, 2);
    assert_eq!(db.attributes["error.type"], "DatabaseUnavailable");

    // The derived event: one JSON line in the request's trace, personal data redacted.
    let event = app
        .logs()
        .into_iter()
        .find(|l| l["event.name"] == "user.viewed")
        .expect("user.viewed event line");
    assert_eq!(event["event.version"], 1);
    assert_eq!(event["user_id"], 7);
    assert_eq!(event["email"], "REDACTED");
    assert_eq!(event["trace_id"], TRACE_ID);
    assert!(
        !app.logs()
            .iter()
            .any(|l| l.to_string().contains("user7@example.com"))
    );

    assert!(
        receiver
            .wait_for_metric("http.server.request.duration", Duration::from_secs(15))
            .await,
        "metrics not exported over OTLP: {:?}",
        receiver.metric_names()
    );

    let status = app.terminate();
    assert!(status.success(), "quickstart exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_over_otlp_grpc() {
    done_when("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_over_otlp_http_protobuf() {
    done_when("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_neither_slows_nor_breaks_the_service() {
    // Nothing listens on port 9 (discard) here: every export fails.
    let app = Quickstart::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    for i in 1..=50 {
        let answer = get(&app.url(&format!("/users/{i}")), &[]).await;
        assert_eq!(answer.status, 200);
    }
    // The spans that could not be delivered are dropped and counted, visible in /metrics.
    let failed = wait_for_dropped(&app.url("/metrics"), "spans", "export_failed").await;
    assert!(failed >= 1, "no failed export counted");
    let status = app.terminate();
    assert!(status.success(), "quickstart exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_protocol_is_a_clear_startup_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"carrier-pigeon\" is not supported"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_sampler_and_default_service_name_come_from_the_environment() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let app = Quickstart::start(&[
        ("LISTEN_ADDR", listen.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "always_off"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("RUST_LOG", "warn"),
    ]);
    let answer = get(&app.url("/users/7"), &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(answer.status, 200);
    let traceparent = answer.headers["traceparent"].to_str().unwrap();
    assert_eq!(trace_id_of(traceparent), TRACE_ID, "the trace continues");
    assert!(
        traceparent.ends_with("-00"),
        "always_off: not sampled: {traceparent}"
    );
    assert_eq!(get(&app.url("/fail"), &[]).await.status, 500);
    assert!(
        receiver
            .wait_for_metric("http.server.request.duration", Duration::from_secs(15))
            .await,
        "metrics are exported whatever the sampler says"
    );
    let logs = app.lines.clone();
    let status = app.terminate();
    assert!(status.success());
    assert!(receiver.spans().is_empty(), "always_off exported spans");

    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "RUST_LOG=warn let lower levels through: {logs:?}"
    );
    assert!(!logs.iter().any(|l| l["message"] == "loading user"));
    let error = logs
        .iter()
        .find(|l| l["message"] == "cannot serve request")
        .expect("the handler's ERROR line");
    assert_eq!(error["level"], "ERROR");
    assert_eq!(
        error["service.name"], "quickstart",
        "defaults to the executable's name"
    );
    assert_eq!(error["trace_id"].as_str().map(str::len), Some(32));
}
