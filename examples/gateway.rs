//! Gateway: an axum service that answers by calling another service through the instrumented
//! HTTP client, with retries, so one trace spans both services.
//!
//! ```sh
//! cargo run --example quickstart &                       # the upstream, on 127.0.0.1:3000
//! cargo run --example gateway &                          # this, on 127.0.0.1:3001
//! curl -i -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!     127.0.0.1:3001/users/7
//! ```
//!
//! Serves `GET /users/{id}` on `LISTEN_ADDR` (default `127.0.0.1:3001`) by calling
//! `GET /users/{id}` at `UPSTREAM_URL` (default `http://127.0.0.1:3000`) and returning its
//! status, content type and body. The trace goes gateway SERVER span → CLIENT span (one per
//! attempt; 5xx and connection failures are retried up to 3 attempts in all) → the upstream's
//! SERVER span; both services' log lines carry the trace id, and both export their spans when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Stops gracefully on SIGINT or SIGTERM, flushing
//! telemetry.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::retry::{Retry, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};
use tracewire::http::client::{Client, ClientLayer, RetryPolicy};

/// The outbound client: retries outside, one CLIENT span per attempt inside.
type Upstream = Retry<RetryPolicy, Client<HttpClient<HttpConnector, Full<Bytes>>>>;

#[derive(Clone)]
struct Gateway {
    client: Upstream,
    upstream_url: String,
}

async fn get_user(State(gateway): State<Gateway>, Path(id): Path<u64>) -> Response {
    let url = format!("{}/users/{id}", gateway.upstream_url);
    let request = match http::Request::get(&url).body(Full::default()) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, url, "invalid upstream URL");
            return (StatusCode::INTERNAL_SERVER_ERROR, "invalid upstream URL\n").into_response();
        }
    };
    tracing::info!(user_id = id, "asking upstream");
    let response = match gateway.client.oneshot(request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "upstream unreachable");
            return (StatusCode::BAD_GATEWAY, "upstream unreachable\n").into_response();
        }
    };
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    // Reading the body to its end also ends the CLIENT span.
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::error!(%error, "upstream body failed");
            return (StatusCode::BAD_GATEWAY, "upstream body failed\n").into_response();
        }
    };
    tracing::info!(status = status.as_u16(), "upstream answered");
    let mut answer = (status, body).into_response();
    if let Some(content_type) = content_type {
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    } else {
        answer.headers_mut().remove(header::CONTENT_TYPE);
    }
    answer
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = match tracewire::builder()
        .service_version(env!("CARGO_PKG_VERSION"))
        .init()
    {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("gateway: cannot set up telemetry: {error}");
            std::process::exit(2);
        }
    };

    let upstream_url = std::env::var("UPSTREAM_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:3000".to_owned())
        .trim_end_matches('/')
        .to_owned();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::new()
                .max_attempts(3)
                .backoff(Duration::from_millis(100), Duration::from_secs(1)),
        ))
        .layer(ClientLayer::new())
        .service(HttpClient::builder(TokioExecutor::new()).build_http());

    let app = Router::new()
        .route("/users/{id}", get(get_user))
        .route_service("/metrics", telemetry.metrics_service())
        .with_state(Gateway {
            client,
            upstream_url: upstream_url.clone(),
        })
        .layer(tracewire::http::ServerLayer::new());

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, upstream = %upstream_url, "gateway listening");

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(tracewire::shutdown_signal())
    .await?;

    tracing::info!("shutting down, flushing telemetry");
    if let Err(error) = telemetry.shutdown() {
        tracing::warn!(%error, "telemetry could not be flushed");
    }
    Ok(())
}
