//! Pipeline, service 1 of 4: `orders` takes `POST /orders` and publishes `order.created` to
//! RabbitMQ. See `docs/guide.md`; `scripts/demo` runs the whole pipeline.
//!
//! ```sh
//! cargo run --example pipeline-orders
//! curl -i -H 'content-type: application/json' -d '{"item":"book","quantity":2}' 127.0.0.1:3100/orders
//! ```
//!
//! `LISTEN_ADDR` (default `127.0.0.1:3100`), `AMQP_ADDR`, `ORDERS_QUEUE` (default
//! `pipeline.order.created`). Answers `202 Accepted` with `{"order_id", "traceparent"}` once
//! the broker confirmed the message, `422` for an invalid order, `503` when the broker refused
//! it. Stops on SIGINT or SIGTERM, flushing telemetry.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{OrderCreated, env_or};
use serde::Deserialize;
use serde_json::{Value, json};
use tracewire::amqp::lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use tracewire::amqp::lapin::types::{FieldTable, ShortString};
use tracewire::amqp::lapin::{BasicProperties, Connection, ConnectionProperties};
use tracewire::amqp::{Message, TracedChannel, TracedProducer};

#[derive(Clone)]
struct Orders {
    producer: TracedProducer,
    queue: String,
    next_id: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: u32,
}

#[derive(Debug)]
struct InvalidOrder(&'static str);

impl std::fmt::Display for InvalidOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidOrder {}

/// A child span of the request; an invalid order makes it an error span.
#[tracewire::traced]
fn validate(order: &NewOrder) -> Result<(), InvalidOrder> {
    if order.item.trim().is_empty() || order.item.len() > 64 {
        return Err(InvalidOrder("item must be 1 to 64 characters"));
    }
    if !(1..=100).contains(&order.quantity) {
        return Err(InvalidOrder("quantity must be 1 to 100"));
    }
    Ok(())
}

async fn create_order(
    State(orders): State<Orders>,
    Json(order): Json<NewOrder>,
) -> (StatusCode, Json<Value>) {
    if let Err(error) = validate(&order) {
        tracing::info!(%error, "order rejected");
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": error.to_string() })),
        );
    }
    let order_id = format!("ord-{}", orders.next_id.fetch_add(1, Ordering::Relaxed));
    let event = OrderCreated {
        order_id: order_id.clone(),
        item: order.item,
        quantity: order.quantity,
    };
    let body = serde_json::to_vec(&event).unwrap_or_default();
    // The PRODUCER span is a child of this request's SERVER span; its context rides in the
    // message headers.
    let published = orders
        .producer
        .send(
            Message::to(&orders.queue)
                .payload(&body)
                .message_id(&order_id),
        )
        .await;
    match published {
        Ok(_) => {
            tracing::info!(order_id = %order_id, "order.created published");
            let traceparent = current_traceparent();
            (
                StatusCode::ACCEPTED,
                Json(json!({ "order_id": order_id, "traceparent": traceparent })),
            )
        }
        Err(error) => {
            tracing::error!(order_id = %order_id, %error, "order.created not accepted by the broker");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "order queue unavailable" })),
            )
        }
    }
}

/// The `traceparent` of the current (server) span, as the configured propagator writes it.
fn current_traceparent() -> String {
    let mut fields = std::collections::HashMap::new();
    tracewire::propagation::inject_current(&mut fields);
    fields.remove("traceparent").unwrap_or_default()
}

// The service level objective of the order API.
tracewire::objective!(
    name = "place-order",
    http_route = "/orders",
    availability = 99.9%,
    latency = 99% < 250ms,
    description = "Customers can place orders."
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--ops-out DIR` / `--ops-check DIR`: this service's alert rules, dashboard and runbook
    // (committed in examples/ops/, see docs/operations.md).
    if let Some(code) = tracewire::ops::Generator::new("orders").handle_args() {
        std::process::exit(code);
    }
    let telemetry = tracewire::builder().service_name("orders").init()?;

    let amqp_addr = env_or("AMQP_ADDR", common::DEFAULT_AMQP_ADDR);
    let queue = ShortString::try_new(env_or("ORDERS_QUEUE", common::DEFAULT_ORDERS_QUEUE))?;
    let connection = Connection::connect(&amqp_addr, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {amqp_addr}: {e}"))?;
    let channel = TracedChannel::new(connection.create_channel().await?);
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            queue.clone(),
            QueueDeclareOptions::default(),
            common::expiring(FieldTable::default()),
        )
        .await?;

    let app = Router::new()
        .route("/orders", post(create_order))
        .route_service("/metrics", telemetry.metrics_service())
        .with_state(Orders {
            producer: TracedProducer::new(channel.clone()).with_properties(
                BasicProperties::default()
                    .with_type(ShortString::from("order.created"))
                    .with_content_type(ShortString::from("application/json")),
            ),
            queue: queue.to_string(),
            next_id: Arc::new(AtomicU64::new(1)),
        })
        .layer(tracewire::http::ServerLayer::new());

    let listener = tokio::net::TcpListener::bind(env_or("LISTEN_ADDR", "127.0.0.1:3100")).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, queue = queue.as_str(), "orders listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(tracewire::shutdown_signal())
    .await?;

    tracing::info!("shutting down, flushing telemetry");
    let _ = channel.close(200, ShortString::from("bye")).await;
    let _ = connection.close(200, ShortString::from("bye")).await;
    if let Err(error) = telemetry.shutdown() {
        tracing::warn!(%error, "telemetry could not be flushed");
    }
    Ok(())
}
