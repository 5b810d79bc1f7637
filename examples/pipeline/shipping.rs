//! Pipeline, service 3 of 4: `shipping` consumes `payment.captured` from Kafka and reserves
//! the stock at `inventory` over HTTP, retrying when inventory is unavailable. See
//! `docs/guide.md`.
//!
//! ```sh
//! cargo run --example pipeline-shipping
//! ```
//!
//! `KAFKA_BROKERS` (default `127.0.0.1:9092`), `PAYMENTS_TOPIC` (default
//! `pipeline.payment.captured`, created when missing), `SHIPPING_GROUP` (default
//! `pipeline-shipping`), `INVENTORY_URL` (default `http://127.0.0.1:3101`). A reservation
//! answered with 503 (or not answered) is sent again, up to 3 attempts, each its own CLIENT
//! span. Logs `shipping ready` once subscribed. Stops on SIGINT or SIGTERM: leaves the consumer
//! group and flushes telemetry.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{PaymentCaptured, Reservation, env_or};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::retry::{Policy, Retry, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};
use tracewire::http::client::{Client, ClientLayer, CountResends};
use tracewire::kafka::rdkafka::Message as _;
use tracewire::kafka::rdkafka::config::ClientConfig;
use tracewire::kafka::rdkafka::consumer::{CommitMode, Consumer as _};
use tracewire::kafka::{TracedConsumer, TracedMessage};

/// The outbound client: retries outside, one CLIENT span per attempt inside.
type Inventory =
    Retry<CountResends<RetryUnavailable>, Client<HttpClient<HttpConnector, Full<Bytes>>>>;

/// Retries a request answered with 503 or not answered at all. `POST /reservations` is safe
/// to resend: the order id is its idempotency key. (`tracewire::http::client::RetryPolicy`
/// only resends idempotent methods, so this POST gets its own small policy; `CountResends`
/// numbers the attempts for the client layer.)
#[derive(Debug, Clone)]
struct RetryUnavailable {
    attempts_left: u32,
    delay: Duration,
}

impl<B: Clone, R, E> Policy<Request<B>, Response<R>, E> for RetryUnavailable {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<B>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<Self::Future> {
        let transient = match result {
            Ok(response) => response.status() == StatusCode::SERVICE_UNAVAILABLE,
            Err(_) => true,
        };
        if !transient || self.attempts_left <= 1 {
            return None;
        }
        self.attempts_left -= 1;
        Some(tokio::time::sleep(self.delay))
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

#[derive(Debug)]
enum ShippingError {
    InvalidRecord(String),
    Inventory(String),
}

impl std::fmt::Display for ShippingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidRecord(e) => write!(f, "not a payment.captured record: {e}"),
            Self::Inventory(e) => write!(f, "inventory: {e}"),
        }
    }
}

impl std::error::Error for ShippingError {}

/// Runs inside the CONSUMER span `process {topic}`: the reservation's CLIENT spans are its
/// children, and its log lines carry the order's trace id.
async fn ship(
    msg: &TracedMessage<'_>,
    inventory: &Inventory,
    url: &str,
) -> Result<(), ShippingError> {
    let payment: PaymentCaptured = serde_json::from_slice(msg.payload().unwrap_or_default())
        .map_err(|e| ShippingError::InvalidRecord(e.to_string()))?;
    let reservation = Reservation {
        order_id: payment.order_id.clone(),
        item: payment.item,
        quantity: payment.quantity,
    };
    let body = serde_json::to_vec(&reservation).unwrap_or_default();
    let request = Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", reservation.order_id.as_str())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ShippingError::Inventory(e.to_string()))?;
    let response = inventory
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| ShippingError::Inventory(e.to_string()))?;
    let status = response.status();
    // Reading the body to its end also ends the CLIENT span.
    let _ = response.into_body().collect().await;
    if !status.is_success() {
        return Err(ShippingError::Inventory(format!("answered {status}")));
    }
    tracing::info!(order_id = %reservation.order_id, "stock reserved, shipment scheduled");
    Ok(())
}

// Paid orders are shipped: the records of the payments topic are processed in time.
tracewire::objective!(
    name = "ship-paid-orders",
    kafka_topic = common::DEFAULT_PAYMENTS_TOPIC,
    availability = 99%,
    latency = 99% < 2.5s,
    description = "Every paid order gets its stock reserved and ships."
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--ops-out DIR` / `--ops-check DIR`: this service's alert rules, dashboard and runbook
    // (committed in examples/ops/, see docs/operations.md).
    if let Some(code) = tracewire::ops::Generator::new("shipping").handle_args() {
        std::process::exit(code);
    }
    let telemetry = tracewire::builder().service_name("shipping").init()?;

    let brokers = env_or("KAFKA_BROKERS", common::DEFAULT_KAFKA_BROKERS);
    let topic = env_or("PAYMENTS_TOPIC", common::DEFAULT_PAYMENTS_TOPIC);
    let group = env_or("SHIPPING_GROUP", "pipeline-shipping");
    let url = format!(
        "{}/reservations",
        env_or("INVENTORY_URL", "http://127.0.0.1:3101").trim_end_matches('/')
    );
    let inventory = ServiceBuilder::new()
        .layer(RetryLayer::new(CountResends::new(RetryUnavailable {
            attempts_left: 3,
            delay: common::env_millis("SHIPPING_RETRY_DELAY_MS", 200),
        })))
        .layer(ClientLayer::new())
        .service(HttpClient::builder(TokioExecutor::new()).build_http());

    common::create_topic(&brokers, &topic)
        .await
        .map_err(|e| format!("cannot create topic {topic} on {brokers}: {e}"))?;
    let consumer = TracedConsumer::from_config(
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000"),
    )?
    .with_commit(Some(CommitMode::Async));
    consumer.inner().subscribe(&[&topic])?;
    tracing::info!(%topic, %group, %url, "shipping ready");

    let shutdown = tracewire::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            received = consumer.recv() => match received {
                Ok(msg) => {
                    match consumer.process(&msg, ship(&msg, &inventory, &url)).await {
                        Ok(processed) => {
                            if let Some(error) = processed.error() {
                                tracing::error!(%error, outcome = processed.outcome().as_str(), "payment.captured not handled");
                            }
                        }
                        Err(error) => tracing::error!(%error, "offset not committed"),
                    }
                }
                Err(error) => tracing::warn!(%error, "receive failed"),
            },
        }
    }

    tracing::info!("shutting down: leaving the consumer group, flushing telemetry");
    // Closing the consumer leaves the group, so the next member need not wait for a timeout.
    consumer.inner().unsubscribe();
    drop(consumer);
    if let Err(error) = telemetry.shutdown() {
        tracing::warn!(%error, "telemetry could not be flushed");
    }
    Ok(())
}
