//! Pipeline, service 2 of 4: `billing` consumes `order.created` from RabbitMQ, charges the
//! order, and produces `payment.captured` to Kafka. See `docs/guide.md`.
//!
//! ```sh
//! cargo run --example pipeline-billing
//! ```
//!
//! `AMQP_ADDR`, `ORDERS_QUEUE` (default `pipeline.order.created`), `KAFKA_BROKERS` (default
//! `127.0.0.1:9092`), `PAYMENTS_TOPIC` (default `pipeline.payment.captured`, created when
//! missing). The payment provider fails the first attempt of `BILLING_FAIL_FIRST_ATTEMPT_PERCENT`
//! percent of orders (default 50, chosen by a hash of the order id: 100 fails every first
//! attempt, 0 none); a failed attempt goes through the retry queue `{ORDERS_QUEUE}.retry` and
//! comes back after `BILLING_RETRY_DELAY_MS` (default 1000), at most 3 attempts in all.
//! Logs `billing ready` once consuming. Stops on SIGINT or SIGTERM: cancels the consumer,
//! flushes the producer and the telemetry.

mod common;

use std::time::Duration;

use common::{OrderCreated, PaymentCaptured, env_or};
use tracewire::amqp::lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use tracewire::amqp::lapin::types::{FieldTable, ShortString};
use tracewire::amqp::lapin::{Connection, ConnectionProperties};
use tracewire::amqp::{
    Outcome, RetryPolicy, RetryQueue, TracedChannel, TracedConsumer, TracedDelivery,
};
use tracewire::kafka::rdkafka::config::ClientConfig;
use tracewire::kafka::rdkafka::producer::Producer as _;
use tracewire::kafka::{Message, TracedProducer};

#[derive(Debug)]
struct PaymentDeclined(&'static str);

impl std::fmt::Display for PaymentDeclined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PaymentDeclined {}

/// Why an attempt to bill an order failed: `error.type` of the failed process span.
#[derive(Debug)]
enum BillingError {
    Declined(PaymentDeclined),
    NotSent(tracewire::kafka::SendError),
}

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BillingError::Declined(error) => write!(f, "payment declined: {error}"),
            BillingError::NotSent(error) => write!(f, "payment.captured not sent: {error}"),
        }
    }
}

struct Billing {
    producer: TracedProducer,
    topic: String,
    fail_percent: u32,
}

/// Charges an order: a child span of the message's process span, an error span when the
/// payment provider fails.
#[tracewire::traced(
    fields(order.id = order.order_id.as_str(), attempt),
    objective(name = "payment-provider", availability = 95%, latency = 99% < 100ms)
)]
async fn charge(
    order: &OrderCreated,
    attempt: u32,
    fail_percent: u32,
) -> Result<u64, PaymentDeclined> {
    tokio::time::sleep(Duration::from_millis(15)).await; // the payment provider
    if attempt == 1 && common::order_in_share("billing", &order.order_id, fail_percent) {
        return Err(PaymentDeclined("payment provider timed out"));
    }
    Ok(1299 * u64::from(order.quantity))
}

/// Runs inside the CONSUMER span `process {queue}`: the charge, the retry republish and the
/// Kafka send are its children, and every log line carries the order's trace id. An `Err`
/// goes through the consumer's retry queue (at most 3 attempts, then the dead letters).
async fn handle(billing: &Billing, consumer: &TracedConsumer, delivery: &TracedDelivery) {
    let attempt = delivery.attempt();
    let result = consumer
        .process(delivery, async {
            let order: OrderCreated = match serde_json::from_slice(&delivery.data) {
                Ok(order) => order,
                Err(error) => {
                    // Retrying cannot fix it: reject it (the queue's dead letters, if any).
                    tracing::warn!(%error, "not an order.created message");
                    return Ok::<_, BillingError>(Outcome::Reject);
                }
            };
            let amount_cents = charge(&order, attempt, billing.fail_percent)
                .await
                .map_err(|error| {
                    tracing::warn!(order_id = %order.order_id, attempt, %error, "charge failed, retrying later");
                    BillingError::Declined(error)
                })?;
            let payment = PaymentCaptured {
                order_id: order.order_id.clone(),
                item: order.item,
                quantity: order.quantity,
                amount_cents,
            };
            let payload = serde_json::to_vec(&payment).unwrap_or_default();
            let message = Message::to(&billing.topic)
                .key(&payment.order_id)
                .payload(&payload);
            billing
                .producer
                .send(message)
                .await
                .map_err(|error| {
                    tracing::error!(order_id = %payment.order_id, %error, "payment.captured not sent, retrying later");
                    BillingError::NotSent(error)
                })?;
            tracing::info!(order_id = %payment.order_id, amount_cents, attempt, "payment.captured sent");
            Ok(Outcome::Ack)
        })
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "delivery not settled");
    }
}

// Orders are charged: the messages of the order queue are processed, and processed in time.
tracewire::objective!(
    name = "charge-orders",
    amqp_queue = common::DEFAULT_ORDERS_QUEUE,
    availability = 99%,
    latency = 99% < 1s,
    description = "Every order placed is charged within a second."
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--ops-out DIR` / `--ops-check DIR`: this service's alert rules, dashboard and runbook
    // (committed in examples/ops/, see docs/operations.md).
    if let Some(code) = tracewire::ops::Generator::new("billing").handle_args() {
        std::process::exit(code);
    }
    let telemetry = tracewire::builder().service_name("billing").init()?;

    let amqp_addr = env_or("AMQP_ADDR", common::DEFAULT_AMQP_ADDR);
    let queue = env_or("ORDERS_QUEUE", common::DEFAULT_ORDERS_QUEUE);
    let brokers = env_or("KAFKA_BROKERS", common::DEFAULT_KAFKA_BROKERS);
    let topic = env_or("PAYMENTS_TOPIC", common::DEFAULT_PAYMENTS_TOPIC);
    common::create_topic(&brokers, &topic)
        .await
        .map_err(|e| format!("cannot create topic {topic} on {brokers}: {e}"))?;
    let producer = TracedProducer::from_config(
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("message.timeout.ms", "10000"),
    )?;

    let connection = Connection::connect(&amqp_addr, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {amqp_addr}: {e}"))?;
    let channel = TracedChannel::new(connection.create_channel().await?);
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel.basic_qos(8, BasicQosOptions::default()).await?;
    let queue_name = ShortString::try_new(queue.clone())?;
    channel
        .queue_declare(
            queue_name.clone(),
            QueueDeclareOptions::default(),
            common::expiring(FieldTable::default()),
        )
        .await?;
    let delay = common::env_millis("BILLING_RETRY_DELAY_MS", 1000);
    let retry = RetryQueue::new(
        &queue,
        RetryPolicy::new().max_attempts(3).backoff(delay, delay * 4),
    )?;
    channel
        .queue_declare(
            ShortString::try_new(retry.retry_queue().to_owned())?,
            QueueDeclareOptions::default(),
            common::expiring(retry.arguments()),
        )
        .await?;

    let mut consumer = channel
        .basic_consume(
            queue_name,
            ShortString::from("billing"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?
        .with_retry(retry);
    let billing = Billing {
        producer,
        topic,
        fail_percent: common::env_percent("BILLING_FAIL_FIRST_ATTEMPT_PERCENT", 50),
    };
    tracing::info!(%queue, topic = %billing.topic, "billing ready");

    let shutdown = tracewire::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            received = consumer.recv() => match received {
                Some(Ok(delivery)) => handle(&billing, &consumer, &delivery).await,
                Some(Err(error)) => {
                    tracing::error!(%error, "RabbitMQ connection lost");
                    break;
                }
                None => break,
            },
        }
    }

    tracing::info!("shutting down, flushing telemetry");
    let _ = channel
        .basic_cancel(ShortString::from("billing"), BasicCancelOptions::default())
        .await;
    let _ = connection.close(200, ShortString::from("bye")).await;
    let _ = billing.producer.inner().flush(Duration::from_secs(5));
    if let Err(error) = telemetry.shutdown() {
        tracing::warn!(%error, "telemetry could not be flushed");
    }
    Ok(())
}
