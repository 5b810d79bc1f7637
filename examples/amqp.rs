//! RabbitMQ: publish and consume messages whose trace travels in their AMQP headers.
//!
//! ```sh
//! scripts/ensure-rabbitmq                    # a broker on 127.0.0.1:5672 (guest/guest)
//! cargo run --example amqp                   # publish 3 messages, process them, exit
//! cargo run --example amqp -- --consume-only # process until SIGINT or SIGTERM
//! ```
//!
//! `AMQP_ADDR` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and `AMQP_QUEUE` (default
//! `tracewire.demo`, declared durable when missing) choose where to talk to.
//!
//! Without arguments the example publishes 3 messages, each from its own `place order` span,
//! then consumes until it has processed them. With `--consume-only` it only consumes. Every
//! processed message logs one JSON line (`"message":"processed message"`) carrying the
//! message's trace id, so a message published by any other AMQP client with a `traceparent`
//! header is processed in that trace. With the management plugin enabled
//! (`rabbitmq-plugins enable rabbitmq_management`):
//!
//! ```sh
//! curl -u guest:guest -H 'content-type: application/json' \
//!   http://127.0.0.1:15672/api/exchanges/%2f/amq.default/publish \
//!   -d '{"routing_key":"tracewire.demo","payload":"hello","payload_encoding":"string",
//!        "properties":{"headers":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}'
//! ```
//!
//! Set `OTEL_EXPORTER_OTLP_ENDPOINT` to export the spans. On a signal the connection is closed
//! (which cancels the consumer; at most `tracewire::amqp::DEFAULT_STOP_TIMEOUT` is spent on a
//! broker that is stopping or unreachable) and telemetry is flushed.

use std::collections::HashSet;
use std::time::Duration;

use tracewire::amqp::lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use tracewire::amqp::lapin::types::{FieldTable, ShortString};
use tracewire::amqp::lapin::{BasicProperties, Connection, ConnectionProperties};
use tracewire::amqp::{
    Message, Outcome, TracedChannel, TracedConsumer, TracedDelivery, TracedProducer,
};
use tracewire::opentelemetry::context::FutureExt as _;
use tracewire::opentelemetry::trace::{TraceContextExt, Tracer};
use tracewire::opentelemetry::{Context, global};

const MESSAGES: usize = 3;

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
            eprintln!("amqp: unknown argument {other:?} (expected --consume-only)");
            std::process::exit(2);
        }
    };
    let telemetry = match tracewire::init() {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("amqp: cannot set up telemetry: {error}");
            std::process::exit(2);
        }
    };

    let code = match run(consume_only).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "amqp example failed");
            1
        }
    };
    if let Err(error) = telemetry.shutdown() {
        eprintln!("amqp: telemetry could not be flushed: {error}");
    }
    std::process::exit(code);
}

async fn run(consume_only: bool) -> Result<(), Box<dyn std::error::Error>> {
    let addr = env_or("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let queue = env_or("AMQP_QUEUE", "tracewire.demo");
    // The queue name comes from the environment: check it fits AMQP's 255 bytes, never panic.
    let queue_name = ShortString::try_new(queue.clone())?;

    let connection = Connection::connect(&addr, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {addr}: {e}"))?;
    let raw = connection.create_channel().await?;
    raw.confirm_select(ConfirmSelectOptions::default()).await?;
    raw.basic_qos(16, BasicQosOptions::default()).await?;
    let channel = TracedChannel::new(raw);
    channel
        .queue_declare(
            queue_name.clone(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;

    let mut consumer = channel
        .basic_consume(
            queue_name.clone(),
            ShortString::default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(%queue, consume_only, "consuming");

    // Messages this run published, by message id; the run ends once they are all processed.
    let mut waiting: HashSet<String> = HashSet::new();
    if !consume_only {
        let producer = TracedProducer::new(channel.clone()).with_properties(
            BasicProperties::default().with_content_type(ShortString::from("application/json")),
        );
        let run_id = std::process::id();
        for i in 0..MESSAGES {
            let id = format!("order-{run_id}-{i}");
            let payload = format!("{{\"order\":{i},\"run\":{run_id}}}");
            // Each message is published from its own root span, standing for the request
            // that placed the order.
            let request =
                Context::current_with_span(global::tracer("amqp-example").start("place order"));
            let sent = producer
                .send(Message::to(&queue).payload(&payload).message_id(&id))
                .with_context(request.clone())
                .await?;
            {
                // Logged in the request's context, so the line carries its trace id.
                let _attached = request.clone().attach();
                tracing::info!(message_id = %id, confirmed = sent.confirmed(), "message published");
            }
            request.span().end();
            waiting.insert(id);
        }
    }

    let shutdown = tracewire::shutdown_signal();
    tokio::pin!(shutdown);
    // Consuming only runs until a signal; a publishing run gives up after a minute.
    let limit = if consume_only { 365 * 24 * 3600 } else { 60 };
    let deadline = tokio::time::sleep(Duration::from_secs(limit));
    tokio::pin!(deadline);
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("signal received: cancelling the consumer");
                break;
            }
            _ = &mut deadline => {
                result = Err(format!("{} of this run's messages not processed in time", waiting.len()).into());
                break;
            }
            received = consumer.recv() => {
                let delivery = match received {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => {
                        result = Err(format!("the broker connection failed: {error}").into());
                        break;
                    }
                    None => {
                        result = Err("the broker cancelled the consumer".into());
                        break;
                    }
                };
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned());
                if let Err(error) = process(&consumer, &delivery).await {
                    tracing::warn!(%error, "message not settled");
                }
                if let Some(id) = id {
                    waiting.remove(&id);
                }
                if !consume_only && waiting.is_empty() {
                    tracing::info!(messages = MESSAGES, "all messages of this run processed");
                    break;
                }
            }
        }
    }

    // Closing the connection cancels the consumer (unsettled deliveries go back to the
    // queue); never wait on a broker that is stopping or unreachable past the deadline.
    drop(consumer);
    if let Err(error) =
        tracewire::amqp::stop(&connection, tracewire::amqp::DEFAULT_STOP_TIMEOUT).await
    {
        tracing::warn!(%error, "stopped without a clean close");
    }
    result
}

/// Processes one delivery inside its `process {queue}` span: the log line carries the trace
/// id of whoever published the message.
async fn process(
    consumer: &TracedConsumer,
    delivery: &TracedDelivery,
) -> Result<Outcome, tracewire::amqp::lapin::Error> {
    let processed = consumer
        .process(delivery, async {
            let message_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default();
            tracing::info!(
                queue = %delivery.queue(),
                message_id = %message_id,
                delivery_tag = delivery.delivery_tag,
                redelivered = delivery.redelivered,
                attempt = delivery.attempt(),
                bytes = delivery.data.len(),
                "processed message"
            );
            Ok::<(), std::convert::Infallible>(())
        })
        .await?;
    Ok(processed.outcome())
}
