//! Service A (ServerLayer) calls service B (ServerLayer) through the client instrumentation,
//! over real loopback sockets: one trace, B's server spans children of A's attempts, B's logs
//! carrying the trace id — with the tower layer and with the reqwest adapter, with retries.

mod client_support;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get as get_route;
use client_support::*;
use opentelemetry_sdk::trace::SpanData;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use tower::retry::{Retry, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};
use tracewire_http::ServerLayer;
use tracewire_http::client::{Client, ClientLayer, RetryPolicy};
use tracewire_test::{Capture, SpanDataExt};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

type TowerClient = Retry<
    RetryPolicy,
    Client<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
    >,
>;

#[derive(Clone)]
enum Upstream {
    Tower(Box<TowerClient>),
    Reqwest(ClientWithMiddleware),
}

#[derive(Clone)]
struct ServiceA {
    upstream: Upstream,
    base: String,
}

/// Service A: `GET /orders/{id}` fetches `GET /users/{id}` from B and returns its body.
async fn order(State(a): State<ServiceA>, Path(id): Path<u32>) -> (StatusCode, String) {
    let url = format!("{}/users/{id}", a.base);
    match a.upstream {
        Upstream::Tower(client) => match client.oneshot(get(&url)).await {
            Ok(response) => {
                let status = response.status();
                let body = read_body(response.into_body()).await;
                (status, String::from_utf8_lossy(&body).into_owned())
            }
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
        },
        Upstream::Reqwest(client) => match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
        },
    }
}

/// Service B: logs, then answers as scripted.
async fn user(
    State(script): State<Script>,
    Path(id): Path<u32>,
    headers: HeaderMap,
) -> (StatusCode, &'static str) {
    tracing::info!(user.id = id, "loading user");
    scripted(State(script), headers).await
}

fn tower_client() -> Upstream {
    Upstream::Tower(Box::new(
        ServiceBuilder::new()
            .layer(RetryLayer::new(
                RetryPolicy::new()
                    .max_attempts(3)
                    .backoff(Duration::from_millis(1), Duration::from_millis(5)),
            ))
            .layer(ClientLayer::new())
            .service(hyper_client()),
    ))
}

fn reqwest_client() -> Upstream {
    Upstream::Reqwest(
        reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(RetryTransientMiddleware::new_with_policy(
                ExponentialBackoff::builder()
                    .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
                    .build_with_max_retries(2),
            ))
            .with(tracewire_http::reqwest::ClientMiddleware::new())
            .build(),
    )
}

struct Run {
    a_server: SpanData,
    attempts: Vec<SpanData>,
    b_servers: Vec<SpanData>,
}

/// Starts B (failing `failures` times) and A (calling B with `upstream`), sends one request with
/// a `traceparent` to A, and collects the spans.
async fn run(capture: &Capture, upstream: fn() -> Upstream, failures: u32) -> (Run, Script) {
    let script = Script::failing(failures);
    let b = serve(
        Router::new()
            .route("/users/{id}", get_route(user))
            .with_state(script.clone())
            .layer(ServerLayer::new()),
    )
    .await;
    let a = serve(
        Router::new()
            .route("/orders/{id}", get_route(order))
            .with_state(ServiceA {
                upstream: upstream(),
                base: format!("http://127.0.0.1:{}", b.port()),
            })
            .layer(ServerLayer::new()),
    )
    .await;

    let mut request = get(&format!("http://127.0.0.1:{}/orders/7", a.port()));
    request.headers_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let response = hyper_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(read_body(response.into_body()).await, "ok");

    let wait = Duration::from_secs(5);
    let a_server = capture
        .wait_for_spans("GET /orders/{id}", 1, wait)
        .await
        .remove(0);
    let n = failures as usize + 1;
    let mut attempts = capture.wait_for_spans("GET", n, wait).await;
    let mut b_servers = capture.wait_for_spans("GET /users/{id}", n, wait).await;
    attempts.sort_by_key(|s| s.start_time);
    b_servers.sort_by_key(|s| s.start_time);
    assert_eq!(attempts.len(), n);
    assert_eq!(b_servers.len(), n);
    (
        Run {
            a_server,
            attempts,
            b_servers,
        },
        script,
    )
}

fn assert_one_trace(capture: &Capture, run: &Run) {
    assert_eq!(run.a_server.trace_id(), TRACE_ID);
    assert_eq!(run.a_server.parent_id(), CALLER_SPAN_ID);
    for (attempt, b_server) in run.attempts.iter().zip(&run.b_servers) {
        assert_eq!(attempt.trace_id(), TRACE_ID);
        assert_eq!(
            attempt.parent_id(),
            run.a_server.span_id(),
            "attempts share A's span"
        );
        assert_eq!(b_server.trace_id(), TRACE_ID);
        assert_eq!(
            b_server.parent_id(),
            attempt.span_id(),
            "each B server span is the child of its attempt"
        );
    }
    let lines: Vec<_> = capture
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "loading user")
        .collect();
    assert_eq!(lines.len(), run.b_servers.len());
    for (line, b_server) in lines.iter().zip(&run.b_servers) {
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
        assert_eq!(line["span_id"], b_server.span_id().as_str(), "{line}");
    }
}

fn assert_retried_twice(run: &Run) {
    assert_eq!(
        resend_counts(&run.attempts),
        [None, Some("1".into()), Some("2".into())]
    );
    let statuses: Vec<_> = run
        .attempts
        .iter()
        .map(|s| s.attr_str("http.response.status_code").unwrap())
        .collect();
    assert_eq!(statuses, ["503", "503", "200"]);
    assert!(run.attempts[0].is_error() && run.attempts[1].is_error());
    assert!(!run.attempts[2].is_error(), "the last attempt is OK");
    let b_statuses: Vec<_> = run
        .b_servers
        .iter()
        .map(|s| s.attr_str("http.response.status_code").unwrap())
        .collect();
    assert_eq!(b_statuses, ["503", "503", "200"]);
}

#[tokio::test]
async fn a_to_b_through_the_tower_layer_is_one_trace() {
    let capture = Capture::install();
    let (run, _) = run(&capture, tower_client, 0).await;
    assert_one_trace(&capture, &run);
    assert_eq!(resend_counts(&run.attempts), [None]);
}

#[tokio::test]
async fn tower_retries_are_attempts_in_one_trace() {
    let capture = Capture::install();
    let (run, script) = run(&capture, tower_client, 2).await;
    assert_one_trace(&capture, &run);
    assert_retried_twice(&run);
    assert_eq!(script.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_to_b_through_reqwest_is_one_trace() {
    let capture = Capture::install();
    let (run, _) = run(&capture, reqwest_client, 0).await;
    assert_one_trace(&capture, &run);
}

#[tokio::test]
async fn reqwest_retry_attempts_are_attempts_in_one_trace() {
    let capture = Capture::install();
    let (run, _) = run(&capture, reqwest_client, 2).await;
    assert_one_trace(&capture, &run);
    assert_retried_twice(&run);
}
