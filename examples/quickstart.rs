//! Quickstart: an axum service instrumented with one call and one layer.
//!
//! ```sh
//! cargo run --example quickstart
//! curl -i -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!     127.0.0.1:3000/users/7
//! curl 127.0.0.1:3000/metrics
//! # the trace, in a browser:
//! #   http://127.0.0.1:3000/_tracewire/traces/4bf92f3577b34da6a3ce929d0e0e4736
//! ```
//!
//! Serves on `LISTEN_ADDR` (default `127.0.0.1:3000`): `GET /users/{id}`, `GET /fail` (500),
//! `GET /slow?ms=N` (answers 200 after N ms), `GET /metrics`, and the trace view under `/_tracewire/`.
//! Inner functions carry `#[tracewire::traced]` (a child span and the `function.calls*` metrics
//! each), `load_roles` is plain `#[tracing::instrument]` (a span of the trace with
//! `TRACEWIRE_TRACING_SPANS=true`); serving a user emits the `user.viewed` event. Set `OTEL_EXPORTER_OTLP_ENDPOINT` to export spans and metrics over OTLP.
//! Stops gracefully on SIGINT or SIGTERM, flushing telemetry.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tracewire::Event as _;
use tracewire_examples::UserViewed;

#[derive(Serialize)]
struct User {
    id: u64,
    name: String,
    #[serde(skip)]
    email: String,
}

#[derive(Debug)]
struct NotFound(u64);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no user {}", self.0)
    }
}

impl std::error::Error for NotFound {}

#[derive(Debug)]
struct DatabaseUnavailable;

impl std::fmt::Display for DatabaseUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("database unavailable")
    }
}

impl std::error::Error for DatabaseUnavailable {}

async fn get_user(Path(id): Path<u64>) -> Result<Json<User>, StatusCode> {
    tracing::info!(user_id = id, "loading user");
    let user = load_user(id).await.map_err(|_| StatusCode::NOT_FOUND)?;
    let roles = load_roles(id).await;
    tracing::debug!(roles = roles.len(), "roles loaded");
    UserViewed {
        user_id: id,
        email: user.email.clone(),
    }
    .emit();
    Ok(Json(user))
}

/// A child span of the request, `function.calls{function="load_user"}` and friends, held to
/// an objective of its own.
#[tracewire::traced(
    fields(user.id = id),
    objective(availability = 99%, latency = 99% < 100ms)
)]
async fn load_user(id: u64) -> Result<User, NotFound> {
    let name = fetch_profile(id).await?;
    tracing::info!(user_id = id, "profile fetched");
    Ok(User {
        id,
        name,
        email: format!("user{id}@example.com"),
    })
}

/// Existing `tracing` instrumentation: with `TRACEWIRE_TRACING_SPANS=true` this span joins the
/// request's trace, under the server span, with `user.id` as an attribute and its event as a
/// span event.
#[tracing::instrument(fields(user.id = id))]
async fn load_roles(id: u64) -> Vec<&'static str> {
    tracing::info!("roles looked up");
    if id.is_multiple_of(2) {
        vec!["reader"]
    } else {
        vec!["reader", "writer"]
    }
}

/// Nested: a child of `load_user`'s span. User 0 does not exist (an error span).
#[tracewire::traced]
async fn fetch_profile(id: u64) -> Result<String, NotFound> {
    if id == 0 {
        return Err(NotFound(id));
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(format!("user-{id}"))
}

async fn fail() -> (StatusCode, &'static str) {
    match check_database().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(error) => {
            tracing::error!(%error, "cannot serve request");
            (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable\n")
        }
    }
}

/// Always fails: its span records the error (`error.type`, an `exception` event).
#[tracewire::traced]
async fn check_database() -> Result<(), DatabaseUnavailable> {
    Err(DatabaseUnavailable)
}

#[derive(serde::Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

/// Sleeps `ms` milliseconds (at most 10 s), then answers 200: a slow request to see kept.
async fn slow(Query(params): Query<SlowParams>) -> &'static str {
    let ms = params.ms.unwrap_or(0).min(10_000);
    wait(ms).await;
    "done\n"
}

/// The slow part of `/slow`: a child span lasting `ms` milliseconds.
#[tracewire::traced]
async fn wait(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// Service level objectives covering every route; `tracewire::ops` turns them into alert
// rules, a dashboard and a runbook (`examples/ops/quickstart.*`, see docs/operations.md).
tracewire::objective!(
    name = "users",
    http_route = "/users/{id}",
    availability = 99.9%,
    latency = 99% < 250ms,
    description = "Profile pages load, and load fast."
);
tracewire::objective!(
    name = "fail",
    http_route = "/fail",
    availability = 99.9%,
    description = "The database check answers (it never does: this route shows an alert firing)."
);
tracewire::objective!(
    name = "metrics",
    http_route = "/metrics",
    availability = 99.9%,
    latency = 99% < 100ms,
    description = "Prometheus can scrape the service."
);

tracewire::objective!(
    name = "slow",
    http_route = "/slow",
    availability = 99.9%,
    description = "Deliberately slow requests answer (their latency is the caller's choice)."
);

/// The operations files of this service: `quickstart --ops-out DIR` writes them,
/// `quickstart --ops-check DIR` compares them with committed ones.
fn operations() -> tracewire::ops::Generator {
    tracewire::ops::Generator::new("quickstart")
        .trace_url_template("http://127.0.0.1:16686/trace/${__value.raw}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(code) = operations().handle_args() {
        std::process::exit(code);
    }
    let telemetry = match tracewire::builder()
        .service_version(env!("CARGO_PKG_VERSION"))
        .init()
    {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("quickstart: cannot set up telemetry: {error}");
            std::process::exit(2);
        }
    };

    let app = Router::new()
        .route("/users/{id}", get(get_user))
        .route("/fail", get(fail))
        .route("/slow", get(slow))
        .route_service("/metrics", telemetry.metrics_service())
        .layer(tracewire::http::ServerLayer::new())
        // Outside the layer: looking at traces records none.
        .nest_service("/_tracewire", telemetry.view_service());

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "quickstart listening");

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(tracewire::shutdown_signal())
    .await?;

    tracing::info!("shutting down, flushing telemetry");
    // An unreachable collector is reported, not fatal: the service itself stopped cleanly.
    if let Err(error) = telemetry.shutdown() {
        tracing::warn!(%error, "telemetry could not be flushed");
    }
    Ok(())
}
