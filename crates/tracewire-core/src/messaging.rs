//! What every broker integration shares: the messaging instruments, how a consumer span is
//! parented, and the attempt header that numbers retries.
//!
//! The model (see `docs/conventions.md`):
//! - one PRODUCER span per publish, child of the current context; its context is injected into
//!   the message headers;
//! - one CONSUMER span per processed message whose parent is the message's creation context
//!   ([`ParentMode::Parent`], the default) or nothing ([`ParentMode::LinkOnly`], for trust
//!   boundaries), and which always links to the creation context;
//! - one span per batch, linking every message's creation context;
//! - a retry republish happens inside the failed attempt's process span, so the retry's
//!   producer span is that attempt's child, and the [`ATTEMPT_HEADER`] counts the tries.

use std::borrow::Cow;

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{Link, SpanKind, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::metric as semconv;

use crate::operation::{Failure, Operation, Timed};
use crate::propagation::remote_span_context;

mod message;

pub use message::Message;

/// Header carrying the attempt number of a message (`1` for the first delivery, absent on
/// messages that were never retried through tracewire).
pub const ATTEMPT_HEADER: &str = "tracewire-attempt";

/// Reads an attempt header value; garbage reads as `None`, never panics.
///
/// ```
/// use tracewire_core::messaging::parse_attempt;
/// assert_eq!(parse_attempt(b"3"), Some(3));
/// assert_eq!(parse_attempt(b"three"), None);
/// ```
pub fn parse_attempt(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// How a consumer span relates to the context that created the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParentMode {
    /// The creation context is the parent (and also linked). One trace from producer to
    /// consumer: the default.
    #[default]
    Parent,
    /// The consumer starts a new trace that links to the creation context. Use at trust
    /// boundaries, where the producer must not decide your sampling or trace ids.
    LinkOnly,
}

/// The messaging instruments, built once per producer or consumer wrapper.
#[derive(Debug, Clone)]
pub struct MessagingInstruments {
    /// `messaging.client.sent.messages`.
    pub sent: Counter<u64>,
    /// `messaging.client.consumed.messages`.
    pub consumed: Counter<u64>,
    /// `messaging.process.duration` (seconds).
    pub process_duration: Histogram<f64>,
    /// `messaging.client.operation.duration` (seconds).
    pub operation_duration: Histogram<f64>,
}

impl MessagingInstruments {
    /// Builds the instruments from the global meter provider.
    pub fn new() -> Self {
        let meter = crate::metrics::meter();
        Self {
            sent: meter
                .u64_counter(semconv::MESSAGING_CLIENT_SENT_MESSAGES)
                .with_unit("{message}")
                .with_description("Number of messages producer attempted to send to the broker")
                .build(),
            consumed: meter
                .u64_counter(semconv::MESSAGING_CLIENT_CONSUMED_MESSAGES)
                .with_unit("{message}")
                .with_description("Number of messages that were delivered to the application")
                .build(),
            process_duration: crate::metrics::duration_histogram(
                &meter,
                semconv::MESSAGING_PROCESS_DURATION,
                "Duration of processing operation",
            ),
            operation_duration: crate::metrics::duration_histogram(
                &meter,
                semconv::MESSAGING_CLIENT_OPERATION_DURATION,
                "Duration of messaging operation initiated by a producer or consumer client",
            ),
        }
    }
}

impl MessagingInstruments {
    /// The measure of one send (a publish): `messaging.client.operation.duration` and one
    /// message in `messaging.client.sent.messages`, both with `attributes` (see
    /// [`metric_attributes`]) and `error.type` when the send failed, was cancelled or panicked.
    pub fn send(&self, attributes: Vec<KeyValue>) -> Timed {
        Timed::new(self.operation_duration.clone(), attributes).counting(self.sent.clone(), 1)
    }

    /// The measure of processing one message or one batch: `messaging.process.duration` with
    /// `attributes` (see [`metric_attributes`]) and `error.type` when processing failed.
    pub fn process(&self, attributes: Vec<KeyValue>) -> Timed {
        Timed::new(self.process_duration.clone(), attributes)
    }
}

/// The metric attributes every broker records, in one order: `messaging.system`,
/// `messaging.operation.name`, `messaging.operation.type`, `messaging.destination.name` and,
/// for consumers, `messaging.consumer.group.name`. Brokers differ only in the values (and in
/// their own `messaging.rabbitmq.*` / `messaging.kafka.*` span attributes).
pub fn metric_attributes(
    system: &'static str,
    operation_name: &'static str,
    operation_type: &'static str,
    destination: impl Into<opentelemetry::Value>,
    group: Option<opentelemetry::Value>,
) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(5);
    attributes.push(KeyValue::new(crate::attributes::MESSAGING_SYSTEM, system));
    attributes.push(KeyValue::new(
        crate::attributes::MESSAGING_OPERATION_NAME,
        operation_name,
    ));
    attributes.push(KeyValue::new(
        crate::attributes::MESSAGING_OPERATION_TYPE,
        operation_type,
    ));
    attributes.push(KeyValue::new(
        crate::attributes::MESSAGING_DESTINATION_NAME,
        destination.into(),
    ));
    if let Some(group) = group {
        attributes.push(KeyValue::new(
            crate::attributes::MESSAGING_CONSUMER_GROUP_NAME,
            group,
        ));
    }
    attributes
}

impl Default for MessagingInstruments {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts a PRODUCER span as a child of `parent` (normally `Context::current()`) and returns
/// the context holding it: inject that context into the message headers.
pub fn start_producer_span<T>(
    tracer: &T,
    name: impl Into<Cow<'static, str>>,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Producer)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    crate::provider::context_with_span(parent, span)
}

/// Starts the CONSUMER span that processes one message whose headers carried `creation`
/// (the extracted context). The span always links to the creation context; under
/// [`ParentMode::Parent`] it is also its child. Returns the context to run the handler in.
pub fn start_consumer_span<T>(
    tracer: &T,
    name: impl Into<Cow<'static, str>>,
    creation: &Context,
    mode: ParentMode,
    attributes: Vec<KeyValue>,
) -> Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let links = remote_span_context(creation)
        .map(|sc| vec![Link::with_context(sc)])
        .unwrap_or_default();
    let parent = match mode {
        ParentMode::Parent => creation.clone(),
        ParentMode::LinkOnly => Context::new(),
    };
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .with_links(links)
        .start_with_context(tracer, &parent);
    crate::provider::context_with_span(&parent, span)
}

/// Starts one CONSUMER span for a batch: a child of `parent` (normally the current context)
/// that links every message's creation context, each link carrying its own attributes
/// (partition, offset, delivery tag, …). Messages without a valid context add no link.
pub fn start_batch_span<T, I>(
    tracer: &T,
    name: impl Into<Cow<'static, str>>,
    messages: I,
    mut attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
    I: IntoIterator<Item = (Context, Vec<KeyValue>)>,
{
    let mut count = 0i64;
    let links: Vec<Link> = messages
        .into_iter()
        .filter_map(|(cx, attrs)| {
            count += 1;
            remote_span_context(&cx).map(|sc| Link::new(sc, attrs, 0))
        })
        .collect();
    attributes.push(KeyValue::new(
        crate::attributes::MESSAGING_BATCH_MESSAGE_COUNT,
        count,
    ));
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .with_links(links)
        .start_with_context(tracer, parent);
    crate::provider::context_with_span(parent, span)
}

/// How a consumed message is settled once its handler is done: the same outcomes, under the
/// same names, for every broker. The value is recorded on the process span as
/// `messaging.message.outcome` ([`as_str`](Self::as_str)).
///
/// A handler returns `Ok(())` (acknowledge), `Ok(outcome)` to choose, or `Err(error)`, which
/// is settled as [`Outcome::Retry`]: through the consumer's retry policy — a delayed retry
/// with an attempt limit, then the dead-letter destination — never an immediate redelivery.
///
/// | outcome | RabbitMQ | Kafka |
/// |---|---|---|
/// | `Ack` | `basic.ack` | offset committed (when the consumer commits) |
/// | `Retry` | a copy to the retry queue (dead-letter queue once the attempts are used up), original acked | a copy to the retry topic (dead-letter topic once the attempts are used up), offset committed |
/// | `DeadLetter` | a copy to the dead-letter queue, original acked | a copy to the dead-letter topic, offset committed |
/// | `Reject` | `basic.reject` without requeue (the queue's own dead-letter exchange, if any) | offset committed, nothing republished |
/// | `Requeue` | `basic.nack` with requeue: redelivered at once, without limit | offset not committed: consumed again after a restart or rebalance |
/// | `Manual` | nothing: the handler settled it | nothing: the handler committed it |
///
/// `Retry` and `DeadLetter` on a consumer without a retry destination settle as `Reject`.
///
/// ```
/// use tracewire_core::messaging::Outcome;
/// assert_eq!(Outcome::from(()), Outcome::Ack);
/// assert_eq!(Outcome::DeadLetter.as_str(), "dead_letter");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Done: acknowledge.
    Ack,
    /// Failed: retry as the consumer's retry policy says (delay, attempt limit, dead letter).
    Retry,
    /// Failed for good: to the dead-letter destination at once.
    DeadLetter,
    /// Drop it (dead-lettered by the broker where the queue is configured so).
    Reject,
    /// Give it back to the broker at once, without a delay or a limit. Prefer
    /// [`Retry`](Self::Retry): a persistent failure requeued turns into a redelivery loop.
    Requeue,
    /// The handler settled the message itself; nothing is sent.
    Manual,
}

impl Outcome {
    /// The outcome of a failed attempt whose message was republished: [`Outcome::DeadLetter`]
    /// to the dead-letter destination, [`Outcome::Retry`] otherwise.
    pub fn republished(dead_letter: bool) -> Self {
        if dead_letter {
            Outcome::DeadLetter
        } else {
            Outcome::Retry
        }
    }

    /// The outcome of a batch whose messages settled as `self` and `other`: the one that
    /// says more about what went wrong, in the order `Ack` < `Manual` < `Requeue` < `Retry` <
    /// `Reject` < `DeadLetter`. A batch whose failed attempt sent one message to its retry
    /// destination and another (out of attempts) to the dead-letter one is a dead-letter batch.
    ///
    /// ```
    /// use tracewire_core::messaging::Outcome;
    /// assert_eq!(Outcome::Retry.worst(Outcome::DeadLetter), Outcome::DeadLetter);
    /// assert_eq!(Outcome::Ack.worst(Outcome::Retry), Outcome::Retry);
    /// assert_eq!(Outcome::Retry.worst(Outcome::Retry), Outcome::Retry);
    /// ```
    pub fn worst(self, other: Outcome) -> Outcome {
        fn rank(o: Outcome) -> u8 {
            match o {
                Outcome::Ack => 0,
                Outcome::Manual => 1,
                Outcome::Requeue => 2,
                Outcome::Retry => 3,
                Outcome::Reject => 4,
                Outcome::DeadLetter => 5,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// The value of `messaging.message.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Reject => "reject",
            Outcome::Requeue => "requeue",
            Outcome::Manual => "manual",
        }
    }
}

impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Outcome::Ack
    }
}

/// What a consumer's `process` did with a message (or a batch): the outcome it settled with
/// and the handler's error, if the handler failed.
#[derive(Debug)]
pub struct Processed<E> {
    outcome: Outcome,
    error: Option<E>,
}

impl<E> Processed<E> {
    /// Builds the report of one processing.
    pub fn new(outcome: Outcome, error: Option<E>) -> Self {
        Self { outcome, error }
    }

    /// How the message was settled (a `Retry` whose attempts were used up reads `DeadLetter`,
    /// a `Retry` without a retry destination `Reject`).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The handler's error, if it failed.
    pub fn error(&self) -> Option<&E> {
        self.error.as_ref()
    }

    /// Whether the handler succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// The handler's error, if it failed.
    pub fn into_error(self) -> Option<E> {
        self.error
    }
}

/// Splits a handler's result into the outcome it asks for, the [`Failure`] to record and the
/// error to hand back: `Ok(o)` asks for `o.into()`, `Err(e)` for [`Outcome::Retry`].
pub fn requested<O: Into<Outcome>, E: std::fmt::Display>(
    result: Result<O, E>,
) -> (Outcome, Option<(Failure, E)>) {
    match result {
        Ok(outcome) => (outcome.into(), None),
        Err(error) => (Outcome::Retry, Some((Failure::from_error(&error), error))),
    }
}

/// How a broker settled a message (or a batch): the [`Outcome`] it settled with, the
/// [`Failure`] to record when settling went wrong (a refused retry copy, a closed channel, a
/// refused commit), and the broker error to hand back, if any.
#[derive(Debug)]
pub struct Settled<B> {
    /// The outcome the message was settled with.
    pub outcome: Outcome,
    /// What went wrong while settling, recorded on the process span.
    pub failure: Option<Failure>,
    /// The broker error `process` returns.
    pub error: Option<B>,
}

impl<B> Settled<B> {
    /// Settled as `outcome`, or failed with `error` (recorded as `failure`).
    pub fn new(outcome: Outcome, result: Result<(), (Failure, B)>) -> Self {
        match result {
            Ok(()) => Self {
                outcome,
                failure: None,
                error: None,
            },
            Err((failure, error)) => Self {
                outcome,
                failure: Some(failure),
                error: Some(error),
            },
        }
    }
}

/// Ends a process span the same way on every broker: `messaging.message.outcome`, then the
/// handler's failure (its `exception` event), then the settle step's failure, if any (the
/// last failure decides `error.type`). Returns what `process` returns: the broker's error, or
/// the outcome with the handler's error.
pub fn finish_process<E, B>(
    mut op: Operation<Timed>,
    settled: Settled<B>,
    handler: Option<(Failure, E)>,
) -> Result<Processed<E>, B> {
    op.set_attribute(KeyValue::new(
        crate::attributes::MESSAGING_OUTCOME,
        settled.outcome.as_str(),
    ));
    let (handler_failure, error) = match handler {
        Some((failure, error)) => (Some(failure), Some(error)),
        None => (None, None),
    };
    for failure in [handler_failure, settled.failure].into_iter().flatten() {
        op.fail(failure);
    }
    op.end();
    match settled.error {
        Some(err) => Err(err),
        None => Ok(Processed::new(settled.outcome, error)),
    }
}
