//! The gRPC example run as a process and called by a gRPC implementation we did not write:
//! Python's `grpcio` (made ready by `scripts/ensure-grpcio`), with a `traceparent` in its
//! metadata. What it exports is decoded by an OTLP receiver.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Service;
use common::{PARENT_ID, TRACE_ID, TRACEPARENT, trace_id_of};
use serde_json::Value;
use tracewire_test::{OtlpReceiver, ReceivedSpan};

const SAY_HELLO: &str = "tracewire.demo.Greeter/SayHello";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The python of a virtual environment with grpcio: `scripts/ensure-grpcio` creates it when
/// missing (and fails loudly when it cannot).
fn python() -> String {
    let output = Command::new(workspace().join("scripts/ensure-grpcio"))
        .output()
        .expect("run scripts/ensure-grpcio");
    assert!(
        output.status.success(),
        "scripts/ensure-grpcio failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().expect("the python path").to_owned()
}

/// Calls `SayHello(name)` at `addr` with the grpcio client; its JSON report.
fn say_hello(python: &str, addr: &str, name: &str, traceparent: Option<&str>) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg(workspace().join("tests/python/greeter_client.py"))
        .args([addr, name]);
    if let Some(traceparent) = traceparent {
        cmd.arg(traceparent);
    }
    let output = cmd.output().expect("run the python client");
    assert!(
        output.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "python client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn start(env: &[(&str, &str)]) -> Service {
    Service::start(env!("CARGO_BIN_EXE_grpc"), "grpc listening", env)
}

/// Waits until the receiver holds spans matching `pick`, at least `n` of them.
async fn spans_where(
    receiver: &OtlpReceiver,
    n: usize,
    pick: impl Fn(&ReceivedSpan) -> bool,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans: Vec<ReceivedSpan> = receiver.spans().into_iter().filter(&pick).collect();
        if spans.len() >= n || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_gets_an_answer_in_its_trace() {
    let python = python();
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.grpc_endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "greeter"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ];
    let app = start(&otel);

    // The call with a traceparent is answered, in that trace.
    let answer = say_hello(&python, &app.addr, "Ada", Some(TRACEPARENT));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["code"], 0);
    assert_eq!(answer["message"], "Hello, Ada!");
    let traceparent = answer["metadata"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent in the response metadata: {answer}"));
    assert_eq!(trace_id_of(traceparent), TRACE_ID);
    let server_span_id = traceparent.split('-').nth(2).unwrap().to_owned();
    let request_id = answer["metadata"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_owned();

    // `fail` answers INTERNAL.
    let failed = say_hello(&python, &app.addr, "fail", None);
    assert_eq!(failed["ok"], false, "{failed}");
    assert_eq!(failed["code"], 13);
    assert_eq!(failed["details"], "the name \"fail\" asks for a failure");

    // The exported SERVER spans.
    let spans = spans_where(&receiver, 2, |s| s.name == SAY_HELLO).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let ok = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("no SayHello span in the caller's trace: {spans:#?}"));
    assert_eq!(ok.kind, 2, "SERVER");
    assert_eq!(ok.span_id, server_span_id);
    assert_eq!(ok.parent_span_id, PARENT_ID);
    assert_eq!(ok.attributes["rpc.system"], "grpc");
    assert_eq!(ok.attributes["rpc.service"], "tracewire.demo.Greeter");
    assert_eq!(ok.attributes["rpc.method"], "SayHello");
    assert_eq!(ok.attributes["rpc.grpc.status_code"], "0");
    assert_eq!(ok.attributes["rpc.response.status_code"], "OK");
    assert_eq!(ok.attributes["server.address"], "127.0.0.1");
    assert_eq!(ok.attributes["http.request.id"], request_id);
    assert!(!ok.attributes.contains_key("error.type"));
    assert_eq!(ok.status_code, 0, "UNSET");
    assert_eq!(ok.resource["service.name"], "greeter");

    let fail = spans.iter().find(|s| s.trace_id != TRACE_ID).unwrap();
    assert_eq!(fail.kind, 2, "SERVER");
    assert_eq!(fail.status_code, 2, "ERROR");
    assert_eq!(fail.attributes["rpc.grpc.status_code"], "13");
    assert_eq!(fail.attributes["rpc.response.status_code"], "INTERNAL");
    assert_eq!(fail.attributes["error.type"], "INTERNAL");

    // The duration metric carries the method and the status.
    let deadline = Instant::now() + Duration::from_secs(15);
    let points = loop {
        let points: Vec<_> = receiver
            .metric_points()
            .into_iter()
            .filter(|p| p.name == "rpc.server.call.duration")
            .collect();
        let codes = |code: &str| {
            points
                .iter()
                .any(|p| p.attributes.get("rpc.grpc.status_code").map(String::as_str) == Some(code))
        };
        if (codes("0") && codes("13")) || Instant::now() > deadline {
            break points;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (code, error) in [("0", None), ("13", Some("INTERNAL"))] {
        let point = points
            .iter()
            .rev()
            .find(|p| p.attributes.get("rpc.grpc.status_code").map(String::as_str) == Some(code))
            .unwrap_or_else(|| panic!("no rpc.server.call.duration point for {code}: {points:#?}"));
        assert_eq!(point.attributes["rpc.method"], "SayHello");
        assert_eq!(point.attributes["rpc.service"], "tracewire.demo.Greeter");
        assert_eq!(point.attributes["rpc.system"], "grpc");
        assert_eq!(
            point.attributes.get("error.type").map(String::as_str),
            error
        );
        assert_eq!(point.value, 1.0, "one call each");
    }

    let status = app.terminate();
    assert!(status.success(), "grpc example exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_upstream_the_chain_is_one_trace() {
    let python = python();
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.grpc_endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ];
    let backend = start(&[otel.as_slice(), &[("OTEL_SERVICE_NAME", "backend")]].concat());
    let upstream = format!("http://{}", backend.addr);
    let front = start(
        &[
            otel.as_slice(),
            &[
                ("OTEL_SERVICE_NAME", "front"),
                ("GRPC_UPSTREAM", upstream.as_str()),
            ],
        ]
        .concat(),
    );

    let answer = say_hello(&python, &front.addr, "Grace", Some(TRACEPARENT));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["message"], "Hello, Grace!");
    let failed = say_hello(&python, &front.addr, "fail", Some(TRACEPARENT));
    assert_eq!(
        failed["code"], 13,
        "the upstream's status comes back: {failed}"
    );

    let spans = spans_where(&receiver, 6, |s| s.name == SAY_HELLO).await;
    assert_eq!(spans.len(), 6, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id == TRACE_ID), "{spans:#?}");
    let of = |service: &str, kind: i32| -> Vec<&ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.resource["service.name"] == service && s.kind == kind)
            .collect()
    };
    let (front_servers, clients, backend_servers) =
        (of("front", 2), of("front", 3), of("backend", 2));
    assert_eq!(
        (front_servers.len(), clients.len(), backend_servers.len()),
        (2, 2, 2)
    );
    for client in &clients {
        let server = front_servers
            .iter()
            .find(|s| s.span_id == client.parent_span_id)
            .expect("the CLIENT span is a child of a front SERVER span");
        assert_eq!(server.parent_span_id, PARENT_ID);
        let downstream = backend_servers
            .iter()
            .find(|s| s.parent_span_id == client.span_id)
            .expect("a backend SERVER span is the child of the CLIENT span");
        assert_eq!(
            client.attributes["rpc.grpc.status_code"],
            downstream.attributes["rpc.grpc.status_code"]
        );
        assert_eq!(
            server.attributes["rpc.grpc.status_code"],
            downstream.attributes["rpc.grpc.status_code"]
        );
        // One request id along the chain.
        assert_eq!(
            server.attributes["http.request.id"],
            downstream.attributes["http.request.id"]
        );
        if client.attributes["rpc.grpc.status_code"] == "13" {
            assert_eq!(client.status_code, 2, "ERROR");
            assert_eq!(client.attributes["error.type"], "INTERNAL");
        }
        assert_eq!(client.attributes["server.address"], "127.0.0.1");
    }

    assert!(front.terminate().success());
    assert!(backend.terminate().success());
}
