//! Instrumented producing: a PRODUCER span per record, its context in the record headers.
//!
//! [`TracedProducer`] wraps rdkafka's [`FutureProducer`]. For other producers
//! (`BaseProducer`, `ThreadedProducer`), [`ProducerTelemetry::start_send`] gives a
//! [`SendSpan`] to build the record headers from and to finish from the delivery callback.

use std::fmt;
use std::sync::Arc;

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
    MESSAGING_KAFKA_OFFSET, MESSAGING_MESSAGE_BODY_SIZE, MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
};
use tracewire_core::messaging::{MessagingInstruments, metric_attributes, start_producer_span};
use tracewire_core::operation::{Operation, Timed};

use crate::attrs;
use crate::carrier;

/// How long (milliseconds) [`TracedProducer::from_config`] lets librdkafka wait for a topic it
/// does not see in the cluster's metadata before failing its records (librdkafka's default is
/// 30 s). Topics created just before (with the `AdminClient`) are seen well within it.
pub const TOPIC_PROPAGATION_MS: &str = "2000";

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
/// use rdkafka::producer::FutureRecord;
/// use std::time::Duration;
///
/// let producer = tracewire_kafka::TracedProducer::from_config(
///     ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092"),
/// )?;
/// let delivery = producer
///     .send(FutureRecord::to("orders").key("o-1").payload("{}"), Duration::from_secs(5))
///     .await
///     .map_err(|(err, _record)| err)?;
/// println!("stored at {}:{}", delivery.partition, delivery.offset);
/// # Ok(()) }
/// ```
pub struct TracedProducer<C: ClientContext + 'static = DefaultClientContext, R = DefaultRuntime> {
    inner: FutureProducer<C, R>,
    telemetry: ProducerTelemetry,
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
        }
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

    /// Sends `record` like [`FutureProducer::send`], inside a PRODUCER span that is a child of
    /// the current context. Headers already on the record are kept, except stale trace
    /// headers, which are replaced by this span's context.
    pub async fn send<K, P, T>(
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
