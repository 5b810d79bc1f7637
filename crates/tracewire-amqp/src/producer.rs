//! [`TracedProducer`]: send a [`Message`] and wait for the broker, the same call as
//! `tracewire-kafka`'s producer.

use std::borrow::Cow;
use std::fmt;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};
use opentelemetry::Context;
use tracewire_core::messaging::Message;

use crate::lapin_error_type;
use crate::publish::TracedChannel;

/// Sends [`Message`]s through a [`TracedChannel`], each in a PRODUCER span whose context
/// travels in the message headers, and waits for the broker: the same producer API as
/// `tracewire_kafka::TracedProducer`.
///
/// [`Message::to`] names a queue (published through the default exchange) or, with a
/// [`Message::key`] (the routing key), an exchange. Put the channel in confirm mode
/// (`confirm_select`) for [`send`](Self::send) to return once the broker has taken the
/// message; without it, `send` returns once the message is written to the connection
/// ([`Sent::confirmed`] tells which).
///
/// For lapin's own arguments (any exchange and routing key pair, per-message properties), use
/// [`TracedChannel::basic_publish`], which starts the same span.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use lapin::{Connection, ConnectionProperties, options::ConfirmSelectOptions};
/// use tracewire_amqp::{Message, TracedChannel, TracedProducer};
///
/// let conn = Connection::connect("amqp://127.0.0.1:5672/%2f", ConnectionProperties::default()).await?;
/// let channel = conn.create_channel().await?;
/// channel.confirm_select(ConfirmSelectOptions::default()).await?;
/// let producer = TracedProducer::new(TracedChannel::new(channel));
/// let sent = producer.send(Message::to("orders").payload(b"{}")).await?;
/// assert!(sent.confirmed());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TracedProducer {
    channel: TracedChannel,
    properties: BasicProperties,
    options: BasicPublishOptions,
}

impl TracedProducer {
    /// Sends through `channel` (build it after `tracewire::init()`).
    pub fn new(channel: TracedChannel) -> Self {
        Self {
            channel,
            properties: BasicProperties::default(),
            options: BasicPublishOptions::default(),
        }
    }

    /// Properties every message starts from: delivery mode, content type, priority, … A
    /// message's headers are added to these properties' headers, its id replaces their
    /// `message_id`.
    pub fn with_properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }

    /// Publish options for every message (`mandatory`: an unroutable message then fails the
    /// send with [`SendError::Returned`]).
    pub fn with_options(mut self, options: BasicPublishOptions) -> Self {
        self.options = options;
        self
    }

    /// The channel.
    pub fn inner(&self) -> &TracedChannel {
        &self.channel
    }

    /// Unwraps the channel.
    pub fn into_inner(self) -> TracedChannel {
        self.channel
    }

    /// Sends `message` inside a PRODUCER span `publish {destination}`, child of the current
    /// context, and waits for the broker's confirmation. The span ends with the confirmation:
    /// a refusal, a returned message or a failed publish is recorded on it as an error
    /// (`error.type` = [`SendError::error_type`]) and returned.
    pub async fn send(&self, message: Message<'_>) -> Result<Sent, SendError> {
        let (exchange, routing_key) = match message.key_bytes() {
            Some(key) => (
                ShortString::from(message.destination()),
                ShortString::from(std::str::from_utf8(key).map_err(|_| SendError::RoutingKey)?),
            ),
            None => (
                ShortString::default(),
                ShortString::from(message.destination()),
            ),
        };
        let mut properties = self.properties.clone();
        if !message.headers().is_empty() {
            let mut headers: FieldTable = properties.headers().clone().unwrap_or_default();
            for (name, value) in message.headers() {
                headers.insert(
                    ShortString::from(*name),
                    AMQPValue::LongString(LongString::from(*value)),
                );
            }
            // Trace headers given here are removed and replaced by the span's when it is
            // written into them (`carrier::inject`, in the publish).
            properties = properties.with_headers(headers);
        }
        if let Some(id) = message.id() {
            properties = properties.with_message_id(ShortString::from(id));
        }
        let confirm = self
            .channel
            .publish_inner(
                exchange,
                routing_key,
                self.options,
                message.payload_bytes(),
                properties,
                None,
            )
            .await
            .map_err(SendError::Publish)?;
        let context = confirm.context().clone();
        match confirm.await.map_err(SendError::Publish)? {
            Confirmation::Nack(_) => Err(SendError::Refused),
            Confirmation::Ack(Some(_)) => Err(SendError::Returned),
            Confirmation::Ack(None) => Ok(Sent {
                context,
                confirmed: true,
            }),
            Confirmation::NotRequested => Ok(Sent {
                context,
                confirmed: false,
            }),
        }
    }
}

/// A message the broker took.
#[derive(Clone)]
pub struct Sent {
    context: Context,
    confirmed: bool,
}

impl Sent {
    /// The context of the PRODUCER span (the one the message headers carry).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Whether the broker confirmed the message (the channel is in confirm mode); `false`
    /// means it was written to the connection, unconfirmed.
    pub fn confirmed(&self) -> bool {
        self.confirmed
    }
}

impl fmt::Debug for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use opentelemetry::trace::TraceContextExt as _;
        f.debug_struct("Sent")
            .field("span_context", self.context.span().span_context())
            .field("confirmed", &self.confirmed)
            .finish()
    }
}

/// Why a [`TracedProducer::send`] failed; the message was not taken by the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The publish or its confirmation failed (connection or channel closed, …).
    #[error("publishing failed: {0}")]
    Publish(lapin::Error),
    /// The broker refused the message (a negative confirmation).
    #[error("the broker refused the message")]
    Refused,
    /// The broker returned the message as unroutable (a `mandatory` publish no queue is bound
    /// for).
    #[error("the broker returned the message as unroutable")]
    Returned,
    /// The message's key is not UTF-8, which an AMQP routing key must be; nothing was sent
    /// and no span started.
    #[error("the routing key is not UTF-8")]
    RoutingKey,
}

impl SendError {
    /// The `error.type` recorded on the PRODUCER span for this error.
    pub fn error_type(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            SendError::Publish(err) => lapin_error_type(err),
            SendError::Refused => "nack",
            SendError::Returned => "returned",
            SendError::RoutingKey => "invalid_routing_key",
        })
    }
}
