//! Instrumented producing: a PRODUCER span per record, its context in the record headers.
//!
//! [`TracedProducer`] wraps rdkafka's [`FutureProducer`]: [`TracedProducer::send`] takes a
//! [`Message`], as `tracewire-amqp`'s producer does; [`TracedProducer::send_record`] takes
//! rdkafka's own `FutureRecord`. For other producers
//! (`BaseProducer`, `ThreadedProducer`), [`ProducerTelemetry::start_send`] gives a
//! [`SendSpan`] to build the record headers from and to finish from the delivery callback.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue, Value};
use rdkafka::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Headers, OwnedHeaders, ToBytes};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::{AsyncRuntime, DefaultRuntime, Timeout};
use tracewire_core::attributes::{
    MESSAGING_ATTEMPT, MESSAGING_DESTINATION_NAME, MESSAGING_DESTINATION_PARTITION_ID,
    MESSAGING_KAFKA_OFFSET, MESSAGING_MESSAGE_BODY_SIZE, MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE,
};
use tracewire_core::messaging::Message;
use tracewire_core::messaging::{MessagingInstruments, metric_attributes, start_producer_span};
use tracewire_core::operation::{Operation, Timed};

use crate::attrs;
use crate::carrier;

/// How long (milliseconds) [`TracedProducer::from_config`] lets librdkafka wait for a topic it
/// does not see in the cluster's metadata before failing its records (librdkafka's default is
/// 30 s). Topics created just before (with the `AdminClient`) are seen well within it.
pub const TOPIC_PROPAGATION_MS: &str = "2000";

/// How long [`TracedProducer::send`] waits for room in librdkafka's queue when it is full
/// (see [`TracedProducer::with_queue_timeout`]).
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    tracer: BoxedTracer,
    instruments: MessagingInstruments,
}

/// The tracer and instruments of a producer, built once and shared by every send.
///
/// Build it after `tracewire::init()`: the tracer and the instruments come from the global
/// providers at that time.
#[derive(Clone)]
pub struct ProducerTelemetry {
    shared: Arc<Shared>,
    record_key: bool,
}

impl ProducerTelemetry {
    /// Telemetry from the global tracer and meter providers.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                tracer: tracewire_core::tracer(),
                instruments: MessagingInstruments::new(),
            }),
            record_key: false,
        }
    }

    /// Records `messaging.kafka.message.key` on producer spans (off by default: keys often
    /// hold personal data such as user or account ids). Only keys that are UTF-8 are recorded.
    pub fn with_message_key(mut self, record: bool) -> Self {
        self.record_key = record;
        self
    }

    /// Starts the PRODUCER span `send {topic}` for one record, as a child of the current
    /// context. Put [`SendSpan::headers`] on the record, then call [`SendSpan::delivered`] or
    /// [`SendSpan::failed`] with the delivery report.
    pub fn start_send(&self, topic: &str, key: Option<&[u8]>, payload_len: usize) -> SendSpan {
        Context::map_current(|parent| self.start(parent, topic, key, payload_len, None, None))
    }

    pub(crate) fn start(
        &self,
        parent: &Context,
        topic: &str,
        key: Option<&[u8]>,
        payload_len: usize,
        partition: Option<i32>,
        attempt: Option<u32>,
    ) -> SendSpan {
        let topic_value = attrs::topic_value(topic);
        let mut attributes = Vec::with_capacity(8);
        attributes.push(attrs::system());
        attributes.push(KeyValue::new(MESSAGING_OPERATION_TYPE, "send"));
        attributes.push(KeyValue::new(MESSAGING_OPERATION_NAME, "send"));
        attributes.push(KeyValue::new(
            MESSAGING_DESTINATION_NAME,
            topic_value.clone(),
        ));
        attributes.push(KeyValue::new(
            MESSAGING_MESSAGE_BODY_SIZE,
            i64::try_from(payload_len).unwrap_or(i64::MAX),
        ));
        if let Some(partition) = partition {
            attributes.push(KeyValue::new(
                MESSAGING_DESTINATION_PARTITION_ID,
                attrs::partition_value(partition),
            ));
        }
        if self.record_key
            && let Some(kv) = attrs::message_key(key)
        {
            attributes.push(kv);
        }
        if let Some(attempt) = attempt {
            attributes.push(KeyValue::new(MESSAGING_ATTEMPT, i64::from(attempt)));
        }
        let cx = start_producer_span(
            &self.shared.tracer,
            format!("send {topic}"),
            attributes,
            parent,
        );
        let measure = self.shared.instruments.send(metric_attributes(
            attrs::SYSTEM,
            "send",
            "send",
            topic_value.clone(),
            None,
        ));
        SendSpan {
            op: Some(Operation::new(cx.clone(), measure)),
            cx,
            topic: topic_value,
        }
    }
}

impl Default for ProducerTelemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProducerTelemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerTelemetry")
            .field("record_key", &self.record_key)
            .finish_non_exhaustive()
    }
}

/// The PRODUCER span of one record, from send to delivery report: an
/// [`Operation`](tracewire_core::operation::Operation) that ends exactly once.
///
/// Dropping it unfinished (the send was cancelled) ends the span as cancelled
/// (`error.type = "cancelled"`); the send still counts in `messaging.client.sent.messages`.
#[must_use = "finish the span with `delivered` or `failed`"]
pub struct SendSpan {
    cx: Context,
    topic: Value,
    op: Option<Operation<Timed>>,
}

impl SendSpan {
    /// The context holding the producer span (what the record headers carry).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Headers for the record: `existing` (if any) without stale trace headers, plus this
    /// span's context.
    pub fn headers<H: Headers + ?Sized>(&self, existing: Option<&H>) -> OwnedHeaders {
        carrier::inject_headers(&self.cx, existing)
    }

    fn record_message_id(&self, id: &str) {
        if let Some(op) = &self.op {
            op.set_attributes([KeyValue::new(MESSAGING_MESSAGE_ID, id.to_owned())]);
        }
    }

    pub(crate) fn headers_replacing<H: Headers + ?Sized>(
        &self,
        existing: Option<&H>,
        replace: &[(&str, &[u8])],
    ) -> OwnedHeaders {
        carrier::rebuild(&self.cx, existing, replace)
    }

    /// The broker acknowledged the record: records partition and offset, ends the span and
    /// counts the record as sent.
    pub fn delivered(mut self, partition: i32, offset: i64) {
        if let Some(op) = self.op.take() {
            op.set_attributes([
                KeyValue::new(
                    MESSAGING_DESTINATION_PARTITION_ID,
                    attrs::partition_value(partition),
                ),
                KeyValue::new(MESSAGING_KAFKA_OFFSET, offset),
            ]);
            op.end();
        }
    }

    /// The record was not delivered: records `error.type` and an error status, ends the span
    /// and counts the failed send.
    pub fn failed(mut self, err: &KafkaError) {
        if let Some(op) = self.op.take() {
            op.end_with(Err(attrs::failure(err)));
        }
    }
}

impl fmt::Debug for SendSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSpan")
            .field("span_context", self.cx.span().span_context())
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// A [`FutureProducer`] whose every send is a PRODUCER span `send {topic}` whose context
/// travels in the record headers.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use rdkafka::config::ClientConfig;
/// use tracewire_kafka::{Message, TracedProducer};
///
/// let producer = TracedProducer::from_config(
///     ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092"),
/// )?;
/// let sent = producer
///     .send(Message::to("orders").key("o-1").payload("{}"))
///     .await?;
/// println!("stored at {}:{}", sent.partition(), sent.offset());
/// # Ok(()) }
/// ```
pub struct TracedProducer<C: ClientContext + 'static = DefaultClientContext, R = DefaultRuntime> {
    inner: FutureProducer<C, R>,
    telemetry: ProducerTelemetry,
    queue_timeout: Duration,
}

impl TracedProducer {
    /// Creates the producer from `config` (default client context and runtime; for others,
    /// build the `FutureProducer` yourself and use [`new`](Self::new)).
    ///
    /// Unless `config` sets it, `topic.metadata.propagation.max.ms` is
    /// [`TOPIC_PROPAGATION_MS`]: a send to a topic that does not exist fails within about
    /// that long, as `UnknownTopicOrPartition`, instead of waiting out librdkafka's 30 s
    /// default (or `message.timeout.ms`, as `MessageTimedOut`).
    pub fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        let mut config = config.clone();
        if config.get("topic.metadata.propagation.max.ms").is_none() {
            config.set("topic.metadata.propagation.max.ms", TOPIC_PROPAGATION_MS);
        }
        Ok(Self::new(FutureProducer::from_config(&config)?))
    }
}

impl<C: ClientContext + 'static, R: AsyncRuntime> TracedProducer<C, R> {
    /// Instruments `producer`, with telemetry from the global providers.
    pub fn new(producer: FutureProducer<C, R>) -> Self {
        Self {
            inner: producer,
            telemetry: ProducerTelemetry::new(),
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }

    /// How long [`send`](Self::send) waits for room when librdkafka's queue is full
    /// (`queue.buffering.max.messages`) before failing with `QueueFull` (default
    /// [`DEFAULT_QUEUE_TIMEOUT`]). The delivery itself is bounded by `message.timeout.ms`.
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Records `messaging.kafka.message.key` (off by default); see
    /// [`ProducerTelemetry::with_message_key`].
    pub fn with_message_key(mut self, record: bool) -> Self {
        self.telemetry = self.telemetry.with_message_key(record);
        self
    }

    /// The wrapped producer (for `flush`, transactions, metadata, …).
    pub fn inner(&self) -> &FutureProducer<C, R> {
        &self.inner
    }

    /// Unwraps the producer.
    pub fn into_inner(self) -> FutureProducer<C, R> {
        self.inner
    }

    /// The producer's telemetry.
    pub fn telemetry(&self) -> &ProducerTelemetry {
        &self.telemetry
    }

    /// Sends `message` inside a PRODUCER span `send {topic}`, child of the current context,
    /// and waits for the delivery report: the same call as `tracewire_amqp::TracedProducer`'s.
    /// The message's key picks the partition (librdkafka's partitioner); its headers are kept,
    /// except trace headers, which the span's context replaces; its id is recorded as
    /// `messaging.message.id` on the span (a Kafka record has no id of its own to carry it).
    /// A failed delivery is recorded on the span (`error.type` = [`SendError::error_type`])
    /// and returned.
    pub async fn send(&self, message: Message<'_>) -> Result<Sent, SendError> {
        let payload = message.payload_bytes();
        let span = Context::map_current(|parent| {
            self.telemetry.start(
                parent,
                message.destination(),
                message.key_bytes(),
                payload.len(),
                None,
                None,
            )
        });
        if let Some(id) = message.id() {
            span.record_message_id(id);
        }
        let context = span.cx.clone();
        let mut record = FutureRecord::<[u8], [u8]>::to(message.destination()).payload(payload);
        record.key = message.key_bytes();
        match self
            .send_in(
                span,
                record,
                self.queue_timeout,
                None::<&OwnedHeaders>,
                message.headers(),
            )
            .await
        {
            Ok(delivery) => Ok(Sent {
                context,
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((err, _)) => Err(SendError(err)),
        }
    }

    /// Sends rdkafka's own `record` like [`FutureProducer::send`] (an explicit partition, a
    /// timestamp, …), inside the same PRODUCER span as [`send`](Self::send). Headers already
    /// on the record are kept, except stale trace headers, which are replaced by this span's
    /// context.
    pub async fn send_record<K, P, T>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: T,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
        T: Into<Timeout>,
    {
        let span = Context::map_current(|parent| {
            self.telemetry.start(
                parent,
                record.topic,
                record.key.map(ToBytes::to_bytes),
                record.payload.map_or(0, |p| p.to_bytes().len()),
                record.partition,
                None,
            )
        });
        let mut record = record;
        let existing = record.headers.take();
        self.send_in(span, record, queue_timeout, existing.as_ref(), &[])
            .await
    }

    /// Sends `record` inside `span`, with the headers of `existing` (rebuilt: stale trace
    /// headers and the ones in `replace` dropped, `replace` and the span's context added).
    pub(crate) async fn send_in<K, P, T, H>(
        &self,
        span: SendSpan,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: T,
        existing: Option<&H>,
        replace: &[(&str, &[u8])],
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
        T: Into<Timeout>,
        H: Headers + ?Sized,
    {
        record.headers = Some(span.headers_replacing(existing, replace));
        let result = self.inner.send(record, queue_timeout).await;
        match &result {
            Ok(delivery) => span.delivered(delivery.partition, delivery.offset),
            Err((err, _)) => span.failed(err),
        }
        result
    }
}

impl<C: ClientContext + 'static, R> Clone for TracedProducer<C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            telemetry: self.telemetry.clone(),
            queue_timeout: self.queue_timeout,
        }
    }
}

impl<C: ClientContext + 'static, R> fmt::Debug for TracedProducer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedProducer")
            .field("telemetry", &self.telemetry)
            .finish_non_exhaustive()
    }
}

/// A record the broker acknowledged.
#[derive(Clone)]
pub struct Sent {
    context: Context,
    partition: i32,
    offset: i64,
}

impl Sent {
    /// The context of the PRODUCER span (the one the record headers carry).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The partition the record was stored in.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The record's offset in that partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

impl fmt::Debug for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sent")
            .field("span_context", self.context.span().span_context())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish()
    }
}

/// Why a [`TracedProducer::send`] failed: the broker did not acknowledge the record.
#[derive(Debug, thiserror::Error)]
#[error("sending failed: {0}")]
pub struct SendError(KafkaError);

impl SendError {
    /// The `error.type` recorded on the PRODUCER span for this error.
    pub fn error_type(&self) -> Cow<'static, str> {
        attrs::error_type(&self.0)
    }

    /// rdkafka's error.
    pub fn kafka_error(&self) -> &KafkaError {
        &self.0
    }

    /// Unwraps rdkafka's error.
    pub fn into_inner(self) -> KafkaError {
        self.0
    }
}
