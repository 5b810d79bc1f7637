//! Kafka instrumentation for [rdkafka]: W3C trace context in record headers, PRODUCER and
//! CONSUMER spans with semantic-convention attributes, batch links, and retry topics that keep
//! a record in its trace.
//!
//! - [`TracedProducer`] wraps a `FutureProducer`: [`TracedProducer::send`] takes a
//!   [`Message`] and waits for the delivery report. Every send is a PRODUCER span
//!   `send {topic}` (`messaging.system = kafka`, `messaging.operation.type = send`,
//!   `messaging.destination.name`, `messaging.message.body.size`, and from the delivery report
//!   `messaging.destination.partition.id` and `messaging.kafka.offset`, or `error.type`); its
//!   context goes into the record headers. Metrics: `messaging.client.sent.messages`,
//!   `messaging.client.operation.duration`. Other producers use [`ProducerTelemetry`].
//! - [`TracedConsumer`] wraps a `StreamConsumer`: received records ([`TracedMessage`]) carry
//!   the context their producer injected ([`TracedMessage::context`]), and
//!   [`TracedConsumer::process`] runs an async handler returning `Result` in the CONSUMER
//!   span `process {topic}`, child of that context and linked to it, with the handler's
//!   `tracing` events and nested spans in the same trace; its result settles the record:
//!   `Ok(())` acks (commits), `Ok(`[`Outcome`]`)` chooses, `Err` goes through the retry
//!   policy. Metrics: `messaging.client.consumed.messages`, `messaging.process.duration`.
//! - [`TracedConsumer::process_batch`]: one span for N records, with N links.
//! - [`RetryTopics`] (given with [`TracedConsumer::with_retry`]): failed records go to a retry
//!   topic, then a dead-letter topic, in the same trace, with an attempt counter, as its
//!   [`RetryPolicy`] says.
//!
//! The producer ([`TracedProducer::send`] with a [`Message`], [`Sent`], [`SendError`]), the
//! consumer, its [`Outcome`]s, [`Processed`] and [`RetryPolicy`] are the same as
//! `tracewire-amqp`'s: code written for one broker reads the same on the other.
//! - [`carrier`]: the header carriers themselves, for code that builds records by hand.
//! - [`stop`]: unsubscribe and close a consumer within a deadline, whatever the broker does.
//!
//! Build the wrappers after `tracewire::init()`: tracer and instruments are taken from the
//! global providers when a wrapper is built, never per record.
//!
//! Header values that are oversized or not UTF-8, malformed `traceparent`s and duplicate keys
//! never fail a record: the record starts a new trace (or the last duplicate wins) and the
//! rejection is counted in `tracewire.propagation.rejected{carrier="kafka"}`.
//!
//! [rdkafka]: https://docs.rs/rdkafka

mod attrs;
pub mod carrier;
mod consumer;
mod producer;
mod retry;
mod stop;

pub use consumer::{TracedConsumer, TracedMessage};
pub use producer::{
    DEFAULT_QUEUE_TIMEOUT, ProducerTelemetry, SendError, SendSpan, Sent, TOPIC_PROPAGATION_MS,
    TracedProducer,
};
pub use retry::{Republished, RetryTopics};
pub use stop::{DEFAULT_STOP_TIMEOUT, StopError, stop};
pub use tracewire_core::messaging::{ATTEMPT_HEADER, Message, Outcome, ParentMode, Processed};
pub use tracewire_core::retry::{RetryPolicy, RetryStep};

/// The rdkafka version this crate is built against, re-exported so applications use the
/// same one.
pub use rdkafka;
