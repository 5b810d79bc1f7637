//! Helpers shared by the end-to-end tests: a real HTTP client and server on loopback.

#![allow(dead_code, unreachable_pub)]

pub mod process;
pub mod prometheus;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A trace id and a parent span id used as the "incoming" context in tests.
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const PARENT_ID: &str = "00f067aa0ba902b7";
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What a client saw.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends `GET url` with `headers` over a fresh hyper client.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Serves `app` on an ephemeral loopback port, with peer addresses available to handlers.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// The trace id of a `traceparent` header value.
pub fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// The value of `tracewire_telemetry_dropped_total{signal, reason}` in a `/metrics` answer, 0
/// when the series is not there (yet).
pub fn dropped_total(metrics: &str, signal: &str, reason: &str) -> u64 {
    let signal = format!("signal=\"{signal}\"");
    let reason = format!("reason=\"{reason}\"");
    metrics
        .lines()
        .find(|l| {
            l.starts_with("tracewire_telemetry_dropped_total{")
                && l.contains(&signal)
                && l.contains(&reason)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads the `/metrics` page at `url` until `tracewire_telemetry_dropped_total{signal, reason}`
/// is above zero or 20 seconds have passed, and returns the last value read.
pub async fn wait_for_dropped(url: &str, signal: &str, reason: &str) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let dropped = dropped_total(&get(url, &[]).await.body, signal, reason);
        if dropped > 0 || std::time::Instant::now() > deadline {
            return dropped;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
