//! Shared pieces of the client tests: loopback servers, a parent span, small helpers.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::{Context, global};

/// Serves `router` on an ephemeral loopback port for the rest of the test.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What a scripted server saw and what it answers next.
#[derive(Clone, Default)]
pub struct Script {
    /// Every request's headers, in arrival order.
    pub seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// How many requests still get a 503 before a 200.
    pub failures_left: Arc<AtomicU32>,
}

impl Script {
    pub fn failing(times: u32) -> Self {
        let script = Self::default();
        script.failures_left.store(times, Ordering::SeqCst);
        script
    }

    pub fn traceparents(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|h| {
                let all: Vec<_> = h.get_all("traceparent").iter().collect();
                assert_eq!(all.len(), 1, "exactly one traceparent per request: {h:?}");
                all[0].to_str().unwrap().to_owned()
            })
            .collect()
    }
}

/// A handler that records the request headers, then answers 503 while failures are left,
/// else 200 with `"ok"`.
pub async fn scripted(
    State(script): State<Script>,
    headers: HeaderMap,
) -> (StatusCode, &'static str) {
    script.seen.lock().unwrap().push(headers);
    let failing = script
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        (StatusCode::SERVICE_UNAVAILABLE, "try again")
    } else {
        (StatusCode::OK, "ok")
    }
}

pub fn hyper_client() -> HyperClient<HttpConnector, Full<Bytes>> {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

pub fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri).body(Full::default()).unwrap()
}

/// A started parent span, as the current context of the code under test.
pub fn parent_context() -> Context {
    let span = global::tracer("client-tests").start("parent");
    Context::current_with_span(span)
}

pub fn span_id_of(cx: &Context) -> String {
    cx.span().span_context().span_id().to_string()
}

pub async fn read_body<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

/// `00-{trace}-{span}-01` for a span.
pub fn traceparent_of(span: &opentelemetry_sdk::trace::SpanData) -> String {
    format!(
        "00-{}-{}-01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    )
}

/// The ended client spans named `name`, one per attempt, in the order the attempts started.
pub fn attempt_spans(
    capture: &tracewire_test::Capture,
    name: &str,
) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let mut spans = capture.spans_named(name);
    spans.sort_by_key(|s| s.start_time);
    spans
}

/// `http.request.resend_count` of each attempt (absent on the first).
pub fn resend_counts(spans: &[opentelemetry_sdk::trace::SpanData]) -> Vec<Option<String>> {
    use tracewire_test::SpanDataExt;
    spans
        .iter()
        .map(|s| s.attr_str("http.request.resend_count"))
        .collect()
}

/// Each attempt as (status code, resend count).
pub fn hops(spans: &[opentelemetry_sdk::trace::SpanData]) -> Vec<(String, Option<String>)> {
    use tracewire_test::SpanDataExt;
    spans
        .iter()
        .map(|s| {
            (
                s.attr_str("http.response.status_code").unwrap_or_default(),
                s.attr_str("http.request.resend_count"),
            )
        })
        .collect()
}
