//! The gateway example in front of the quickstart, both run as users run them (real processes,
//! real sockets, one OTLP receiver): a request with a `traceparent` to the gateway is one
//! trace — gateway SERVER span → CLIENT span → quickstart SERVER span — in both services'
//! exported spans and log lines.

mod common;

use std::time::{Duration, Instant};

use common::process::Service;
use common::{PARENT_ID, TRACE_ID, TRACEPARENT, get};
use serde_json::Value;
use tracewire_test::OtlpReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_the_gateway_is_one_trace_across_both_services() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ];
    let users = Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        &[otlp[0], otlp[1], ("OTEL_SERVICE_NAME", "users")],
    );
    let upstream = format!("http://{}", users.addr);
    let gateway = Service::start(
        env!("CARGO_BIN_EXE_gateway"),
        "gateway listening",
        &[
            otlp[0],
            otlp[1],
            ("OTEL_SERVICE_NAME", "gateway"),
            ("UPSTREAM_URL", upstream.as_str()),
        ],
    );

    let answer = get(
        &format!("http://{}/users/7", gateway.addr),
        &[("traceparent", TRACEPARENT)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["id"], 7);

    // users: server, load_user, fetch_profile; gateway: server, client.
    let spans = receiver.wait_for_spans(5, Duration::from_secs(15)).await;
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.resource["service.name"] == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name:?} span from {service}: {spans:?}"))
    };
    let gateway_server = find("gateway", "GET /users/{id}");
    let client = find("gateway", "GET");
    let users_server = find("users", "GET /users/{id}");
    for span in [gateway_server, client, users_server] {
        assert_eq!(span.trace_id, TRACE_ID);
    }
    assert_eq!(gateway_server.parent_span_id, PARENT_ID);
    assert_eq!(client.parent_span_id, gateway_server.span_id);
    assert_eq!(client.kind, 3, "CLIENT");
    assert_eq!(client.attributes["http.response.status_code"], "200");
    assert_eq!(users_server.parent_span_id, client.span_id);

    // Both services' log lines of the request carry the trace id (and their own server span).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let g = gateway.logs_of_trace(TRACE_ID);
        let u = users.logs_of_trace(TRACE_ID);
        let g_ok = g.iter().any(|l| {
            l["message"] == "upstream answered" && l["span_id"] == gateway_server.span_id.as_str()
        });
        let u_ok = u.iter().any(|l| {
            l["message"] == "loading user" && l["span_id"] == users_server.span_id.as_str()
        });
        if g_ok && u_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway logs {g:?}\nusers logs {u:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
