//! What the four pipeline services share: the messages they pass, configuration from the
//! environment, the deterministic "does this order misbehave" rule, and Kafka topic creation.
//! Nothing here is instrumentation.

// Each service uses part of this module.
#![allow(dead_code)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracewire::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use tracewire::kafka::rdkafka::client::DefaultClientContext;
use tracewire::kafka::rdkafka::config::ClientConfig;
use tracewire::kafka::rdkafka::error::KafkaError;
use tracewire::kafka::rdkafka::types::RDKafkaErrorCode;

/// RabbitMQ, as started by `scripts/ensure-rabbitmq`.
pub(crate) const DEFAULT_AMQP_ADDR: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The Kafka broker, as started by `scripts/ensure-tansu`.
pub(crate) const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// The queue orders publishes `order.created` to (`ORDERS_QUEUE`).
pub(crate) const DEFAULT_ORDERS_QUEUE: &str = "pipeline.order.created";
/// The topic billing produces `payment.captured` to (`PAYMENTS_TOPIC`).
pub(crate) const DEFAULT_PAYMENTS_TOPIC: &str = "pipeline.payment.captured";

/// `order.created`, published by orders to RabbitMQ.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderCreated {
    /// `ord-1`, `ord-2`, …
    pub order_id: String,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
}

/// `payment.captured`, produced by billing to Kafka.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PaymentCaptured {
    /// The order paid for.
    pub order_id: String,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
    /// Charged, in cents.
    pub amount_cents: u64,
}

/// The body of inventory's `POST /reservations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reservation {
    /// The order to reserve stock for (also the idempotency key).
    pub order_id: String,
    /// What to reserve.
    pub item: String,
    /// How many.
    pub quantity: u32,
}

/// `name` from the environment, `default` when unset or empty.
pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A percentage (0–100) from the environment, `default` when unset or not a number.
pub(crate) fn env_percent(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(default)
        .min(100)
}

/// A duration in milliseconds from the environment.
pub(crate) fn env_millis(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default),
    )
}

/// Whether `order_id` falls in the first `percent` of 100 buckets, by an FNV-1a hash of
/// `rule` and the id: the same order gets the same answer in every process and every run, so
/// `100` forces the behaviour for every order and `0` turns it off.
pub(crate) fn order_in_share(rule: &str, order_id: &str, percent: u32) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rule.bytes().chain([b':']).chain(order_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % 100 < u64::from(percent)
}

/// Creates `topic` (one partition) unless it exists: the broker does not create topics on
/// first use, and a consumer that subscribes before its topic exists may wait a long time.
pub(crate) async fn create_topic(brokers: &str, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// `args` plus `x-expires`: the broker deletes a queue nobody has used for ten minutes, so
/// runs with their own queue names (the tests) leave nothing behind. The publisher and the
/// consumer declare a queue with the same arguments (the broker insists they agree).
pub(crate) fn expiring(
    mut args: tracewire::amqp::lapin::types::FieldTable,
) -> tracewire::amqp::lapin::types::FieldTable {
    args.insert(
        "x-expires".into(),
        tracewire::amqp::lapin::types::AMQPValue::LongLongInt(600_000),
    );
    args
}
