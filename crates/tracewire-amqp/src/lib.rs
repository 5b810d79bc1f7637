//! Trace context through RabbitMQ with [lapin]: publish, consume, retries and dead letters.
//!
//! - [`TracedProducer`] sends a [`Message`] through a traced channel and waits for the
//!   broker's confirmation: the same call as `tracewire-kafka`'s producer.
//! - [`TracedChannel`] wraps a `lapin::Channel`. Its
//!   [`basic_publish`](TracedChannel::basic_publish) starts a PRODUCER span
//!   `publish {exchange}` (`publish {routing key}` on the default exchange) and writes the span's
//!   context into the message headers; its [`basic_consume`](TracedChannel::basic_consume)
//!   returns a [`TracedConsumer`].
//! - [`TracedConsumer`] is a `Stream` of [`TracedDelivery`]: each delivery carries the context
//!   extracted from its headers ([`TracedDelivery::context`]), and
//!   [`TracedConsumer::process`] runs an async handler returning `Result` inside a CONSUMER
//!   span `process {queue}` whose parent is that creation context (or which only links to it,
//!   under [`ParentMode::LinkOnly`]). The handler's `tracing` events and nested spans belong
//!   to that span; its result settles the delivery: `Ok(())` acks, `Ok(`[`Outcome`]`)`
//!   chooses, `Err` goes through the retry policy.
//! - [`RetryQueue`] (given with [`TracedConsumer::with_retry`]) republishes a failed message
//!   to a delay queue (TTL + dead-letter exchange back to the work queue) in the same trace,
//!   counting attempts in [`ATTEMPT_HEADER`], as its [`RetryPolicy`] says (attempt limit,
//!   backoff, dead-letter queue).
//! - [`TracedConsumer::process_batch`] handles several deliveries in one span that links
//!   every message.
//! - [`carrier`] holds the `FieldTable` injector/extractor for code that publishes or consumes
//!   by hand.
//! - [`stop`] closes the connection within a deadline, whatever the broker is doing.
//!
//! The producer ([`TracedProducer::send`] with a [`Message`], [`Sent`], [`SendError`]), the
//! consumer, its [`Outcome`]s, [`Processed`] and [`RetryPolicy`] are the same as
//! `tracewire-kafka`'s: code written for one broker reads the same on the other.
//!
//! Metrics: `messaging.client.sent.messages`, `messaging.client.operation.duration`,
//! `messaging.client.consumed.messages`, `messaging.process.duration`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lapin::{Connection, ConnectionProperties, options::BasicConsumeOptions, types::FieldTable};
//! use tracewire_amqp::TracedChannel;
//!
//! let conn = Connection::connect("amqp://127.0.0.1:5672/%2f", ConnectionProperties::default()).await?;
//! let channel = TracedChannel::new(conn.create_channel().await?);
//! let mut consumer = channel
//!     .basic_consume("orders".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
//!     .await?;
//! while let Some(delivery) = consumer.recv().await {
//!     let delivery = delivery?;
//!     consumer
//!         .process(&delivery, async {
//!             tracing::info!(bytes = delivery.data.len(), "order received"); // carries the trace id
//!             Ok::<(), std::io::Error>(())
//!         })
//!         .await?;
//! }
//! # Ok(()) }
//! ```

pub mod carrier;
mod consume;
mod producer;
mod publish;
mod retry;
mod shared;
mod stop;

pub use consume::{TracedConsumer, TracedDelivery};
pub use producer::{SendError, Sent, TracedProducer};
pub use publish::{TracedChannel, TracedConfirm};
pub use retry::{Republished, RetryError, RetryQueue};
pub use stop::{DEFAULT_STOP_TIMEOUT, StopError, stop};
pub use tracewire_core::messaging::{ATTEMPT_HEADER, Message, Outcome, ParentMode, Processed};
pub use tracewire_core::retry::{RetryPolicy, RetryStep};

/// The lapin version this crate is built against, so applications can name its types
/// (`tracewire::amqp::lapin::…`) without a dependency of their own that could drift.
pub use lapin;

/// The `messaging.system` value for RabbitMQ.
pub const SYSTEM: &str = "rabbitmq";

/// A low-cardinality `error.type` for a lapin error.
pub(crate) fn lapin_error_type(err: &lapin::Error) -> &'static str {
    use lapin::ErrorKind as K;
    match err.kind() {
        K::ChannelsLimitReached => "channels_limit_reached",
        K::InvalidProtocolVersion(_) => "invalid_protocol_version",
        K::InvalidChannel(_) => "invalid_channel",
        K::InvalidChannelState(..) => "invalid_channel_state",
        K::InvalidConnectionState(_) => "invalid_connection_state",
        K::IOError(_) => "io_error",
        K::RuntimeShutdownError(_) => "runtime_shutdown",
        K::ParsingError(_) => "parsing_error",
        K::ProtocolError(_) => "protocol_error",
        K::SerialisationError(_) => "serialisation_error",
        K::AuthProviderError(_) => "auth_provider_error",
        K::FutureCompleted => "future_completed",
        K::NoDefaultRuntime => "no_default_runtime",
        K::MissingHeartbeatError => "missing_heartbeat",
        _ => "_OTHER",
    }
}
