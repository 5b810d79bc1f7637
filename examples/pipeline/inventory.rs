//! Pipeline, service 4 of 4: `inventory` takes `POST /reservations`, and is unavailable now
//! and then. See `docs/guide.md`.
//!
//! ```sh
//! cargo run --example pipeline-inventory
//! ```
//!
//! `LISTEN_ADDR` (default `127.0.0.1:3101`). The first reservation request for
//! `INVENTORY_UNAVAILABLE_PERCENT` percent of orders (default 50, chosen by a hash of the order
//! id: 100 refuses every first request, 0 none) is answered `503 Service Unavailable`; asked
//! again, it answers `201 Created`. Stops on SIGINT or SIGTERM, flushing telemetry.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{Reservation, env_or};
use serde_json::{Value, json};

#[derive(Clone)]
struct Inventory {
    unavailable_percent: u32,
    /// Orders refused once already (their next request succeeds).
    refused: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stock database unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// A child span of the request; an error span when the stock database is unavailable.
#[tracewire::traced(fields(order.id = reservation.order_id.as_str()))]
async fn reserve(inventory: &Inventory, reservation: &Reservation) -> Result<String, Unavailable> {
    let first_request = inventory
        .refused
        .lock()
        .map(|mut refused| refused.insert(reservation.order_id.clone()))
        .unwrap_or(false);
    if first_request
        && common::order_in_share(
            "inventory",
            &reservation.order_id,
            inventory.unavailable_percent,
        )
    {
        return Err(Unavailable);
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // the stock database
    Ok(format!("res-{}", reservation.order_id))
}

async fn create_reservation(
    State(inventory): State<Inventory>,
    Json(reservation): Json<Reservation>,
) -> (StatusCode, Json<Value>) {
    match reserve(&inventory, &reservation).await {
        Ok(id) => {
            tracing::info!(order_id = %reservation.order_id, reservation_id = %id, "stock reserved");
            (StatusCode::CREATED, Json(json!({ "reservation_id": id })))
        }
        Err(error) => {
            tracing::warn!(order_id = %reservation.order_id, %error, "reservation refused");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": error.to_string() })),
            )
        }
    }
}

// The reservation API that shipping calls.
tracewire::objective!(
    name = "reservations",
    http_route = "/reservations",
    availability = 99.9%,
    latency = 99% < 100ms,
    description = "Stock can be reserved for paid orders."
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--ops-out DIR` / `--ops-check DIR`: this service's alert rules, dashboard and runbook
    // (committed in examples/ops/, see docs/operations.md).
    if let Some(code) = tracewire::ops::Generator::new("inventory").handle_args() {
        std::process::exit(code);
    }
    let telemetry = tracewire::builder().service_name("inventory").init()?;

    let app = Router::new()
        .route("/reservations", post(create_reservation))
        .route_service("/metrics", telemetry.metrics_service())
        .with_state(Inventory {
            unavailable_percent: common::env_percent("INVENTORY_UNAVAILABLE_PERCENT", 50),
            refused: Arc::default(),
        })
        .layer(tracewire::http::ServerLayer::new());

    let listener = tokio::net::TcpListener::bind(env_or("LISTEN_ADDR", "127.0.0.1:3101")).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "inventory listening");
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
