//! The trace view as a user meets it: the real quickstart binary with its embedded view, and
//! the gateway and the quickstart exporting to the real `tracewire-view` binary, each page
//! loaded in headless Chromium.

mod common;

use std::time::{Duration, Instant};

use common::process::Service;
use common::{PARENT_ID, TRACE_ID, TRACEPARENT, get};
use serde_json::Value;
use tracewire_test::Browser;

/// Polls `url` (JSON) until `ready` accepts it.
async fn wait_for_json(url: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = get(url, &[]).await;
        if answer.status == 200 {
            let value: Value = serde_json::from_str(&answer.body).unwrap();
            if ready(&value) {
                return value;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed at {url}: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn span_names(trace: &Value) -> Vec<(String, String)> {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_owned(),
                s["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_serves_the_trace_of_a_request_at_its_trace_id() {
    let app = Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        &[("OTEL_SERVICE_NAME", "quickstart")],
    );
    // curl -H 'traceparent: 00-<T>-<P>-01' 127.0.0.1:<port>/users/7
    assert_eq!(
        get(&app.url("/users/7"), &[("traceparent", TRACEPARENT)])
            .await
            .status,
        200
    );

    let trace = wait_for_json(
        &app.url(&format!("/_tracewire/api/traces/{TRACE_ID}")),
        "the request's trace",
        |t| t["spans"].as_array().is_some_and(|s| s.len() == 3),
    )
    .await;
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans[0]["parent_span_id"], PARENT_ID, "{trace}");
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["attributes"]["http.route"], "/users/{id}");
    let messages = |i: usize| -> Vec<&str> {
        spans[i]["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect()
    };
    assert!(messages(0).contains(&"loading user"), "{trace}");
    assert_eq!(messages(1), ["profile fetched"], "{trace}");

    let browser = Browser::start(1280, 800).await;
    browser
        .goto(&app.url(&format!("/_tracewire/traces/{TRACE_ID}")))
        .await;
    assert_eq!(
        browser.texts(".waterfall summary .label").await,
        ["GET /users/{id}", "load_user", "fetch_profile"],
        "the server span and its #[traced] children, in waterfall order"
    );
    assert_eq!(
        browser.texts(".waterfall summary .svc").await,
        ["quickstart"; 3]
    );
    assert!(browser.texts(".waterfall .span.error").await.is_empty());

    // A failing request: its #[traced] span is marked.
    assert_eq!(get(&app.url("/fail"), &[]).await.status, 500);
    let failed = wait_for_json(
        &app.url("/_tracewire/api/traces?status=error&q=check_database"),
        "the failed request",
        |list| list.as_array().is_some_and(|l| l.len() == 1),
    )
    .await;
    let failed_id = failed[0]["trace_id"].as_str().unwrap();
    browser
        .goto(&app.url(&format!("/_tracewire/traces/{failed_id}")))
        .await;
    assert_eq!(
        browser.texts(".waterfall .span.error summary .label").await,
        ["GET /fail", "check_database"]
    );
    // Looking at traces records none: only the two requests are listed.
    browser.goto(&app.url("/_tracewire/")).await;
    let mut listed = browser.texts("table.traces tbody td:nth-child(3)").await;
    listed.sort();
    assert_eq!(listed, ["GET /fail", "GET /users/{id}"]);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_quickstart_exporting_to_tracewire_view_draw_their_edge() {
    let view = Service::start(
        env!("CARGO_BIN_EXE_tracewire-view"),
        "tracewire-view listening",
        &[
            ("TRACEWIRE_VIEW_ADDR", "127.0.0.1:0"),
            ("TRACEWIRE_VIEW_OTLP_GRPC_ADDR", "127.0.0.1:0"),
            ("TRACEWIRE_VIEW_OTLP_HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    let line = view.logs().remove(0);
    let grpc = format!("http://{}", line["otlp_grpc"].as_str().unwrap());
    let http = format!("http://{}", line["otlp_http"].as_str().unwrap());

    // The quickstart over HTTP/protobuf, the gateway over gRPC.
    let users = Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        &[
            ("OTEL_SERVICE_NAME", "quickstart"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let upstream = format!("http://{}", users.addr);
    let gateway = Service::start(
        env!("CARGO_BIN_EXE_gateway"),
        "gateway listening",
        &[
            ("OTEL_SERVICE_NAME", "gateway"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("UPSTREAM_URL", upstream.as_str()),
        ],
    );
    assert_eq!(
        get(&gateway.url("/users/7"), &[("traceparent", TRACEPARENT)])
            .await
            .status,
        200
    );

    let map = wait_for_json(
        &view.url("/api/map"),
        "the gateway → quickstart edge",
        |m| {
            m["edges"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["from"] == "gateway"))
        },
    )
    .await;
    assert_eq!(
        map["edges"],
        serde_json::json!([{
            "from": "gateway", "to": "quickstart", "kind": "request",
            "requests": 1, "errors": 0, "error_rate": 0.0,
            "p99_nano": map["edges"][0]["p99_nano"],
        }]),
        "{map}"
    );
    assert!(map["edges"][0]["p99_nano"].as_u64().unwrap() > 0);

    let trace = wait_for_json(
        &view.url(&format!("/api/traces/{TRACE_ID}")),
        "the whole trace",
        |t| t["spans"].as_array().is_some_and(|s| s.len() == 5),
    )
    .await;
    assert_eq!(
        span_names(&trace),
        [
            ("gateway".into(), "GET /users/{id}".into()),
            ("gateway".into(), "GET".into()),
            ("quickstart".into(), "GET /users/{id}".into()),
            ("quickstart".into(), "load_user".into()),
            ("quickstart".into(), "fetch_profile".into()),
        ]
    );

    let browser = Browser::start(1280, 600).await;
    browser.goto(&view.url("/map")).await;
    assert_eq!(
        browser.texts("svg .node .svc").await,
        ["gateway", "quickstart"]
    );
    assert_eq!(
        browser.attributes("svg .edge", "data-from").await,
        [Some("gateway".to_owned())]
    );
    assert_eq!(
        browser.attributes("svg .edge", "data-to").await,
        [Some("quickstart".to_owned())]
    );
    assert_eq!(
        browser
            .texts("table.edges tbody tr td:nth-child(-n+3)")
            .await,
        ["gateway", "→", "quickstart"]
    );
    browser
        .goto(&view.url(&format!("/traces/{TRACE_ID}")))
        .await;
    assert_eq!(
        browser.texts(".waterfall summary .svc").await,
        [
            "gateway",
            "gateway",
            "quickstart",
            "quickstart",
            "quickstart"
        ]
    );
    browser.close().await;
    drop(gateway);
    drop(users);
}
