//! Shared fixtures for the RabbitMQ tests: a real broker on 127.0.0.1:5672 (or `AMQP_ADDR`),
//! unique queue names, and helpers to read what was captured.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use tracewire_amqp::{TracedChannel, TracedConsumer, TracedDelivery};

pub const DEFAULT_ADDR: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "tracewire.test.{prefix}.{}.{nanos}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects to the broker, failing the test loudly when it is not there.
pub async fn connect_named(name: &str) -> Connection {
    let addr = addr();
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(Duration::from_secs(15), Connection::connect(&addr, props)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => panic!(
            "RabbitMQ is not reachable at {addr}: {err}. These tests need a running broker: \
             run scripts/ensure-rabbitmq"
        ),
        Err(_) => panic!(
            "connecting to RabbitMQ at {addr} timed out after 15 s. These tests need a running \
             broker: run scripts/ensure-rabbitmq"
        ),
    }
}

pub async fn connect() -> Connection {
    connect_named(&unique("conn")).await
}

/// A traced channel with publisher confirms on, reporting the broker address.
pub async fn traced_channel(conn: &Connection) -> TracedChannel {
    let channel = conn.create_channel().await.expect("create channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm_select");
    TracedChannel::new(channel).with_server_address("127.0.0.1", 5672)
}

/// Declares a non-durable, auto-deleted queue with `args`.
pub async fn declare_queue(channel: &lapin::Channel, name: &str, args: FieldTable) {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
}

/// Queue arguments that dead-letter rejected messages to `dlq` through the default exchange.
pub fn dead_letter_to(dlq: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.into()),
    );
    args
}

pub async fn consume(channel: &TracedChannel, queue: &str) -> TracedConsumer {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("basic_consume {queue}: {e}"))
}

/// The next delivery, within 10 s.
pub async fn next(consumer: &mut TracedConsumer) -> TracedDelivery {
    match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("consumer error: {e}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery on {} within 10 s", consumer.queue()),
    }
}

/// Starts a root INTERNAL span and returns its context (attach it to publish in its trace).
pub fn root_span(name: &'static str) -> Context {
    let tracer = tracewire_core::tracer();
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .start_with_context(&tracer, &Context::new());
    Context::new().with_span(span)
}

pub fn hex_trace(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

pub fn hex_span(cx: &Context) -> String {
    cx.span().span_context().span_id().to_string()
}

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use tracewire_test::attrs::{attr, attr_set, b, has_attr, i, points, s, total};

pub fn long(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

/// The text of a long-string or byte-array header.
pub fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Declares a non-durable queue that outlives its consumers (delete it with
/// [`settled_count`]).
pub async fn declare_kept_queue(channel: &lapin::Channel, name: &str) {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
}

/// Cancels `consumer` (its unsettled messages return to the queue), then returns how many
/// messages the queue holds, and deletes it.
pub async fn cancel_and_count(
    channel: &lapin::Channel,
    consumer: TracedConsumer,
    queue: &str,
) -> u32 {
    let tag = consumer.inner().tag();
    channel
        .basic_cancel(tag, lapin::options::BasicCancelOptions::default())
        .await
        .expect("basic_cancel");
    drop(consumer);
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    channel
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await
        .expect("queue_delete");
    q.message_count()
}

/// Publishes `body` to `queue` through the default exchange and waits for the broker's confirm.
pub async fn publish_confirmed(channel: &TracedChannel, queue: &str, body: &[u8]) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}
