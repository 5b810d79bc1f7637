//! `docs/configuration.md` against the code: every row names a test that exists, every
//! variable the configuration code reads is documented, and the variables work (or stop the
//! service with their name) when the quickstart is started with them, as a user would.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::get;
use common::process::Service;
use tracewire_test::OtlpReceiver;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// (variable, tested-by) of every row of the document's tables, `[SIGNAL_]` expanded.
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut rows = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", variable, default, honoured, tested by, ""
        assert_eq!(cells.len(), 6, "malformed row: {line}");
        let variable = cells[1].trim_matches('`');
        let tested_by = cells[4].trim_matches('`').to_owned();
        if variable.contains("[SIGNAL_]") {
            for signal in ["", "TRACES_", "METRICS_", "LOGS_"] {
                rows.push((variable.replace("[SIGNAL_]", signal), tested_by.clone()));
            }
        } else {
            rows.push((variable.to_owned(), tested_by));
        }
    }
    rows
}

#[test]
fn every_documented_variable_has_a_covering_test() {
    let rows = documented();
    assert!(rows.len() > 50, "{rows:?}");
    for (variable, tested_by) in &rows {
        let (file, test) = tested_by
            .rsplit_once("::")
            .unwrap_or_else(|| panic!("{variable}: `file::test` expected, got {tested_by:?}"));
        let source = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|e| panic!("{variable}: cannot read {file}: {e}"));
        assert!(
            source.contains(&format!("fn {test}(")),
            "{variable}: no test `{test}` in {file}"
        );
    }
    // Every variable name the configuration code spells out is documented.
    let documented: BTreeSet<&str> = rows.iter().map(|(v, _)| v.as_str()).collect();
    for file in [
        "crates/tracewire/src/config.rs",
        "crates/tracewire/src/init.rs",
        "crates/tracewire/src/resource.rs",
    ] {
        let source = std::fs::read_to_string(root().join(file)).unwrap();
        for piece in source.split('"').skip(1).step_by(2) {
            let is_name = (piece.starts_with("OTEL_") || piece.starts_with("TRACEWIRE_"))
                && piece.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
            if is_name {
                assert!(
                    documented.contains(piece),
                    "{piece} (read in {file}) is not in docs/configuration.md"
                );
            }
        }
    }
}

fn quickstart(env: &[(&str, &str)]) -> Service {
    Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        env,
    )
}

#[test]
fn settings_that_cannot_work_stop_startup_naming_the_variable() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
    let mut cases: Vec<(&str, &str)> = vec![
        ("OTEL_SDK_DISABLED", "yes"),
        ("OTEL_PROPAGATORS", "tracecontext,xray"),
        ("OTEL_LOGS_EXPORTER", "loki"),
        ("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes"),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "5s"),
        ("TRACEWIRE_TRACING_SPANS", "on"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1"),
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "many"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "1.5"),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "x"),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "x"),
        ("OTEL_SPAN_LINK_COUNT_LIMIT", "x"),
        ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "x"),
        ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "x"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "5s"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "lots"),
        ("OTEL_BSP_MAX_CONCURRENT_EXPORTS", "lots"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "5s"),
        ("OTEL_BLRP_EXPORT_TIMEOUT", "5s"),
        ("OTEL_BLRP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "lots"),
    ];
    let per_signal = [
        ("PROTOCOL", "http/json"),
        ("COMPRESSION", "brotli"),
        ("HEADERS", "x-tenant"),
        ("TIMEOUT", "10s"),
        ("CERTIFICATE", "/nonexistent/ca.pem"),
        ("CLIENT_CERTIFICATE", "/nonexistent/client.pem"),
    ];
    let names: Vec<(String, &str)> = ["", "TRACES_", "METRICS_", "LOGS_"]
        .iter()
        .flat_map(|signal| {
            per_signal
                .iter()
                .map(move |(setting, bad)| (format!("OTEL_EXPORTER_OTLP_{signal}{setting}"), *bad))
        })
        .collect();
    cases.extend(names.iter().map(|(n, v)| (n.as_str(), *v)));
    for (variable, bad) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env(endpoint.0, endpoint.1)
            .env("OTEL_LOGS_EXPORTER", "otlp")
            .env(variable, bad)
            .output()
            .unwrap();
        // OTEL_LOGS_EXPORTER itself is under test in one case: the last .env wins.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}={bad}: {stderr}");
        assert!(
            stderr.contains("cannot set up telemetry") && stderr.contains(variable),
            "{variable}={bad}: {stderr}"
        );
        if variable.ends_with("HEADERS") {
            assert!(
                !stderr.contains("x-tenant"),
                "header values are not echoed: {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_disabled_records_and_exports_nothing() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("TRACEWIRE_TRACING_SPANS", "true"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    let answer = get(&app.url("/users/7"), &[]).await;
    assert_eq!(answer.status, 200);
    let traceparent = answer.headers["traceparent"].to_str().unwrap();
    assert!(traceparent.ends_with("-00"), "not sampled: {traceparent}");
    assert_eq!(get(&app.url("/metrics"), &[]).await.status, 404);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // JSON lines stay.
    assert!(app.logs().iter().any(|l| l["message"] == "loading user"));
    let status = app.terminate();
    assert!(status.success());
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_ratio_zero_keeps_nothing() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    for _ in 0..5 {
        let answer = get(&app.url("/users/7"), &[]).await;
        assert!(
            answer.headers["traceparent"]
                .to_str()
                .unwrap()
                .ends_with("-00")
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = app.terminate();
    assert!(status.success());
    assert!(receiver.spans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_none_turn_signals_off() {
    for (off, on) in [
        ("OTEL_TRACES_EXPORTER", "metrics"),
        ("OTEL_METRICS_EXPORTER", "traces"),
    ] {
        let receiver = OtlpReceiver::start().await;
        let endpoint = receiver.http_endpoint();
        let app = quickstart(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            (off, "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ]);
        assert_eq!(get(&app.url("/users/7"), &[]).await.status, 200);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !receiver.requests().iter().any(|r| r.signal == on) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {on} with {off}=none"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = app.terminate();
        assert!(status.success());
        assert!(
            receiver.requests().iter().all(|r| r.signal == on),
            "{off}=none: {:?}",
            receiver.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_variables_are_ignored() {
    let app = quickstart(&[
        ("OTEL_LOG_LEVEL", "debug"),
        ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4"),
        ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "1"),
    ]);
    assert_eq!(get(&app.url("/users/7"), &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = app.logs();
    let status = app.terminate();
    assert!(status.success());
    // RUST_LOG (default info) decides, not OTEL_LOG_LEVEL: the handler's DEBUG line is absent.
    assert!(logs.iter().any(|l| l["message"] == "loading user"));
    assert!(logs.iter().all(|l| l["level"] != "DEBUG"), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_limit_variables_take_effect() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4"),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    assert_eq!(get(&app.url("/users/7"), &[]).await.status, 200);
    let spans = receiver.wait_for_spans(3, Duration::from_secs(15)).await;
    let status = app.terminate();
    assert!(status.success());
    assert!(spans.len() >= 3, "{spans:?}");
    let mut cut = 0;
    for span in &spans {
        assert!(span.attributes.len() <= 3, "{span:?}");
        for value in span.attributes.values() {
            assert!(value.chars().count() <= 4, "{span:?}");
            cut += usize::from(value.chars().count() == 4);
        }
    }
    assert!(cut > 0, "no value reached the limit: {spans:?}");
    // One span per export request.
    let trace_requests = receiver
        .requests()
        .iter()
        .filter(|r| r.signal == "traces")
        .count();
    assert_eq!(trace_requests, receiver.spans().len());
}

/// Child half of `pii_hash_key_hashes_event_fields`: prints the hash under the environment
/// it was started with (it only runs when the parent starts it).
#[test]
fn pii_hash_child() {
    if std::env::var_os("TRACEWIRE_CONFIG_TEST_CHILD").is_some() {
        println!(
            "HASH={}",
            tracewire::__private::event::pii_hash("customer-4242")
        );
    }
}

#[test]
fn pii_hash_key_hashes_event_fields() {
    let hash = |key: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "pii_hash_child", "--nocapture"])
            .env("TRACEWIRE_CONFIG_TEST_CHILD", "1")
            .env_remove("TRACEWIRE_PII_HASH_KEY");
        if let Some(key) = key {
            cmd.env("TRACEWIRE_PII_HASH_KEY", key);
        }
        let output = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("HASH="))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("child printed no hash: {stdout}"))
    };
    let one = hash(Some("key-one"));
    let again = hash(Some("key-one"));
    let two = hash(Some("key-two"));
    assert_eq!(one.len(), 32);
    assert!(one.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(one, again);
    assert_ne!(one, two);
    assert_eq!(hash(None), "REDACTED");
}
