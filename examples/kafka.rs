//! Kafka: produce and consume records whose trace travels in their headers.
//!
//! ```sh
//! scripts/ensure-tansu                       # a broker on 127.0.0.1:9092
//! cargo run --example kafka                  # produce 3 records, process them, exit
//! cargo run --example kafka -- --consume-only
//! ```
//!
//! `KAFKA_BROKERS` (default `127.0.0.1:9092`), `KAFKA_TOPIC` (default `tracewire.demo`, created
//! when missing) and `KAFKA_GROUP` (default `tracewire-demo`) choose where to talk to.
//!
//! Without arguments the example sends 3 records, each from its own `place order` span, then
//! consumes until it has processed them. With `--consume-only` it only consumes, until SIGINT
//! or SIGTERM. Every processed record logs one JSON line carrying the record's trace id, so a
//! record produced by any other Kafka client with a `traceparent` header is processed in that
//! trace:
//!
//! ```sh
//! printf 'k1:hello\n' | kcat -P -b 127.0.0.1:9092 -t tracewire.demo -K: \
//!     -H traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//! ```
//!
//! Set `OTEL_EXPORTER_OTLP_ENDPOINT` to export the spans. On a signal the consumer leaves its
//! group (waiting at most `tracewire::kafka::DEFAULT_STOP_TIMEOUT` for a broker that is gone
//! or stopping) and telemetry is flushed.

use std::collections::HashSet;
use std::time::Duration;

use tracewire::kafka::rdkafka::Message as _;
use tracewire::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use tracewire::kafka::rdkafka::client::DefaultClientContext;
use tracewire::kafka::rdkafka::config::ClientConfig;
use tracewire::kafka::rdkafka::consumer::{CommitMode, Consumer};
use tracewire::kafka::rdkafka::error::KafkaError;
use tracewire::kafka::rdkafka::producer::Producer as _;
use tracewire::kafka::rdkafka::types::RDKafkaErrorCode;
use tracewire::kafka::{Message, TracedConsumer, TracedMessage, TracedProducer};
use tracewire::opentelemetry::context::FutureExt as _;
use tracewire::opentelemetry::trace::{TraceContextExt, Tracer};
use tracewire::opentelemetry::{Context, global};

const RECORDS: usize = 3;

#[derive(Debug)]
struct InvalidRecord(&'static str);

impl std::fmt::Display for InvalidRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidRecord {}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let consume_only = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--consume-only") => true,
        Some(other) => {
            eprintln!("kafka: unknown argument {other:?} (expected --consume-only)");
            std::process::exit(2);
        }
    };
    let telemetry = match tracewire::builder()
        .service_version(env!("CARGO_PKG_VERSION"))
        .init()
    {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("kafka: cannot set up telemetry: {error}");
            std::process::exit(2);
        }
    };

    let code = match run(consume_only).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "kafka example failed");
            1
        }
    };
    if let Err(error) = telemetry.shutdown() {
        eprintln!("kafka: telemetry could not be flushed: {error}");
    }
    std::process::exit(code);
}

async fn run(consume_only: bool) -> Result<(), Box<dyn std::error::Error>> {
    let brokers = env_or("KAFKA_BROKERS", "127.0.0.1:9092");
    let topic = env_or("KAFKA_TOPIC", "tracewire.demo");
    let group = env_or("KAFKA_GROUP", "tracewire-demo");
    create_topic(&brokers, &topic).await?;

    let consumer = TracedConsumer::from_config(
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000"),
    )?
    .with_commit(Some(CommitMode::Async))
    .with_message_key(true);
    consumer.inner().subscribe(&[&topic])?;
    tracing::info!(%brokers, %topic, %group, consume_only, "consuming");

    // Records this run produced, by payload; the run ends once they are all processed.
    let mut waiting: HashSet<String> = HashSet::new();
    if !consume_only {
        let producer = TracedProducer::from_config(
            ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("message.timeout.ms", "10000"),
        )?
        .with_message_key(true);
        let run_id = std::process::id();
        for i in 0..RECORDS {
            let payload = format!("{{\"order\":{i},\"run\":{run_id}}}");
            let key = format!("order-{i}");
            // Each record is sent from its own root span, standing for the request that
            // placed the order.
            let request =
                Context::current_with_span(global::tracer("kafka-example").start("place order"));
            let sent = producer
                .send(Message::to(&topic).key(&key).payload(&payload))
                .with_context(request.clone())
                .await;
            {
                // Logged in the request's context, so the line carries its trace id.
                let _attached = request.clone().attach();
                match sent {
                    Ok(sent) => {
                        tracing::info!(
                            partition = sent.partition(),
                            offset = sent.offset(),
                            "record sent"
                        )
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            request.span().end();
            waiting.insert(payload);
        }
        producer.inner().flush(Duration::from_secs(5))?;
    }

    let shutdown = tracewire::shutdown_signal();
    tokio::pin!(shutdown);
    // Consuming only runs until a signal; a producing run gives up after a minute.
    let limit = if consume_only { 365 * 24 * 3600 } else { 60 };
    let deadline = tokio::time::sleep(Duration::from_secs(limit));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("signal received: leaving the consumer group");
                break;
            }
            _ = &mut deadline => {
                return Err(format!("{} of this run's records not processed in time", waiting.len()).into());
            }
            received = consumer.recv() => {
                let msg = match received {
                    Ok(msg) => msg,
                    Err(error) => {
                        tracing::warn!(%error, "receive failed");
                        continue;
                    }
                };
                let payload = msg.payload_view::<str>().and_then(Result::ok).map(str::to_owned);
                match consumer.process(&msg, handle(&msg)).await {
                    Ok(processed) => {
                        if let Some(error) = processed.error() {
                            tracing::warn!(%error, outcome = processed.outcome().as_str(), "record not processed");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "offset not committed"),
                }
                if let Some(payload) = payload {
                    waiting.remove(&payload);
                }
                if !consume_only && waiting.is_empty() {
                    tracing::info!(records = RECORDS, "all records of this run processed");
                    break;
                }
            }
        }
    }
    // Leave the group so the next member does not wait for this one's session to time out,
    // but never wait on a broker that is gone or stopping for longer than the deadline.
    match tracewire::kafka::stop(consumer, tracewire::kafka::DEFAULT_STOP_TIMEOUT).await {
        Ok(took) => tracing::info!(took_ms = took.as_millis() as u64, "left the consumer group"),
        Err(error) => tracing::warn!(%error, "stopped without leaving the consumer group"),
    }
    Ok(())
}

/// The handler: runs inside the record's process span, so this line carries its trace id.
async fn handle(msg: &TracedMessage<'_>) -> Result<(), InvalidRecord> {
    let key = msg.key_view::<str>().and_then(Result::ok).unwrap_or("");
    match msg.payload() {
        Some(payload) => {
            tracing::info!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                key,
                bytes = payload.len(),
                attempt = msg.attempt(),
                "processed record"
            );
            Ok(())
        }
        None => Err(InvalidRecord("record without payload")),
    }
}

async fn create_topic(brokers: &str, topic: &str) -> Result<(), KafkaError> {
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
            Err((name, code)) => {
                tracing::warn!(topic = %name, error = ?code, "cannot create topic");
            }
        }
    }
    Ok(())
}
