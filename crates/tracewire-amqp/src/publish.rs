//! Instrumented publishing: [`TracedChannel::basic_publish`] and the [`TracedConfirm`] future.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use opentelemetry::context::FutureExt as _;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use tracewire_core::attributes as attr;
use tracewire_core::messaging::{MessagingInstruments, ParentMode, start_producer_span};

use crate::carrier;
use crate::consume::TracedConsumer;
use crate::{SYSTEM, lapin_error_type};

/// State shared by every clone of a [`TracedChannel`] and the consumers it creates.
pub(crate) struct Shared {
    pub(crate) tracer: BoxedTracer,
    pub(crate) instruments: MessagingInstruments,
    pub(crate) server: Option<(String, u16)>,
    pub(crate) parent_mode: ParentMode,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            tracer: tracewire_core::tracer(),
            instruments: MessagingInstruments::new(),
            server: None,
            parent_mode: ParentMode::Parent,
        }
    }

    pub(crate) fn push_server(&self, attrs: &mut Vec<KeyValue>) {
        if let Some((host, port)) = &self.server {
            attrs.push(KeyValue::new(attr::SERVER_ADDRESS, host.clone()));
            attrs.push(KeyValue::new(attr::SERVER_PORT, i64::from(*port)));
        }
    }
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Self {
            tracer: tracewire_core::tracer(),
            instruments: self.instruments.clone(),
            server: self.server.clone(),
            parent_mode: self.parent_mode,
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("server", &self.server)
            .field("parent_mode", &self.parent_mode)
            .finish_non_exhaustive()
    }
}

/// A [`lapin::Channel`] whose publishes and consumers are traced.
///
/// It dereferences to the channel, so every other channel operation (declarations, QoS,
/// `confirm_select`, …) is called as usual; [`basic_publish`](Self::basic_publish) and
/// [`basic_consume`](Self::basic_consume) take the same arguments as lapin's and add the
/// telemetry.
///
/// Build it after `tracewire::init()` (or after installing the global OpenTelemetry
/// providers): its tracer and instruments are taken once, here.
///
/// ```no_run
/// # async fn demo() -> Result<(), lapin::Error> {
/// use lapin::{BasicProperties, Connection, ConnectionProperties, options::BasicPublishOptions};
/// use tracewire_amqp::TracedChannel;
///
/// let conn = Connection::connect("amqp://127.0.0.1:5672/%2f", ConnectionProperties::default()).await?;
/// let channel = TracedChannel::new(conn.create_channel().await?);
/// let confirm = channel
///     .basic_publish("".into(), "orders".into(), BasicPublishOptions::default(), b"{}", BasicProperties::default())
///     .await?;
/// confirm.await?; // the PRODUCER span ends here, with the broker's confirmation
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TracedChannel {
    channel: Channel,
    shared: Arc<Shared>,
}

impl TracedChannel {
    /// Wraps `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            shared: Arc::new(Shared::new()),
        }
    }

    /// Records `server.address` and `server.port` (the broker) on every span.
    pub fn with_server_address(mut self, host: impl Into<String>, port: u16) -> Self {
        self.shared_mut().server = Some((host.into(), port));
        self
    }

    /// How consumers created by [`basic_consume`](Self::basic_consume) parent their process
    /// spans (default [`ParentMode::Parent`]).
    pub fn with_parent_mode(mut self, mode: ParentMode) -> Self {
        self.shared_mut().parent_mode = mode;
        self
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.shared)
    }

    /// The wrapped channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Unwraps the channel.
    pub fn into_inner(self) -> Channel {
        self.channel
    }

    /// Publishes like [`Channel::basic_publish`], inside a PRODUCER span
    /// `publish {exchange}` (or `publish {routing key}` on the default exchange) that is a
    /// child of the current context.
    ///
    /// The span's context is written into the message headers, merged with the headers in
    /// `properties` (trace headers already there are replaced). The returned [`TracedConfirm`]
    /// resolves like lapin's [`PublisherConfirm`]; the span ends when it resolves (or is
    /// dropped), recording a negative or failed confirmation as an error.
    pub async fn basic_publish(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        options: BasicPublishOptions,
        payload: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<TracedConfirm> {
        self.publish_inner(exchange, routing_key, options, payload, properties, None)
            .await
    }

    pub(crate) async fn publish_inner(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        options: BasicPublishOptions,
        payload: &[u8],
        properties: BasicProperties,
        attempt: Option<u32>,
    ) -> lapin::Result<TracedConfirm> {
        let start = Instant::now();
        let destination: &str = if exchange.as_str().is_empty() {
            routing_key.as_str()
        } else {
            exchange.as_str()
        };
        let destination: Arc<str> = Arc::from(destination);
        let mut attrs = Vec::with_capacity(10);
        attrs.push(KeyValue::new(attr::MESSAGING_SYSTEM, SYSTEM));
        attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"));
        attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_NAME, "publish"));
        attrs.push(KeyValue::new(
            attr::MESSAGING_DESTINATION_NAME,
            destination.clone(),
        ));
        if !routing_key.as_str().is_empty() {
            attrs.push(KeyValue::new(
                attr::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
                routing_key.as_str().to_owned(),
            ));
        }
        if let Some(id) = properties.message_id() {
            attrs.push(KeyValue::new(
                attr::MESSAGING_MESSAGE_ID,
                id.as_str().to_owned(),
            ));
        }
        attrs.push(KeyValue::new(
            attr::MESSAGING_MESSAGE_BODY_SIZE,
            i64::try_from(payload.len()).unwrap_or(i64::MAX),
        ));
        if let Some(n) = attempt {
            attrs.push(KeyValue::new(attr::MESSAGING_ATTEMPT, i64::from(n)));
        }
        self.shared.push_server(&mut attrs);

        let name = format!("publish {destination}");
        let cx = Context::map_current(|parent| {
            start_producer_span(&self.shared.tracer, name, attrs, parent)
        });

        let mut headers: FieldTable = properties.headers().clone().unwrap_or_default();
        carrier::inject(&cx, &mut headers);
        let properties = properties.with_headers(headers);

        let mut state = Finish {
            cx: cx.clone(),
            start,
            destination,
            shared: self.shared.clone(),
            done: false,
        };
        match self
            .channel
            .basic_publish(exchange, routing_key, options, payload, properties)
            .with_context(cx)
            .await
        {
            Ok(confirm) => Ok(TracedConfirm {
                inner: confirm,
                state,
            }),
            Err(err) => {
                state.finish(Some(lapin_error_type(&err)), Some(&err.to_string()));
                Err(err)
            }
        }
    }

    /// Starts a consumer like [`Channel::basic_consume`]; its deliveries carry their extracted
    /// creation context and are processed in CONSUMER spans `process {queue}`.
    pub async fn basic_consume(
        &self,
        queue: ShortString,
        consumer_tag: ShortString,
        options: BasicConsumeOptions,
        arguments: FieldTable,
    ) -> lapin::Result<TracedConsumer> {
        let consumer = self
            .channel
            .basic_consume(queue, consumer_tag, options, arguments)
            .await?;
        Ok(TracedConsumer::with_shared(consumer, self.shared.clone()))
    }
}

impl Deref for TracedChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.channel
    }
}

/// Ends a producer span exactly once, with metrics.
struct Finish {
    cx: Context,
    start: Instant,
    destination: Arc<str>,
    shared: Arc<Shared>,
    done: bool,
}

impl Finish {
    fn finish(&mut self, error_type: Option<&'static str>, message: Option<&str>) {
        if self.done {
            return;
        }
        self.done = true;
        let span = self.cx.span();
        let mut metric_attrs = vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, SYSTEM),
            KeyValue::new(attr::MESSAGING_OPERATION_NAME, "publish"),
            KeyValue::new(attr::MESSAGING_DESTINATION_NAME, self.destination.clone()),
        ];
        if let Some(error_type) = error_type {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type));
            span.set_status(Status::error(message.unwrap_or_default().to_owned()));
            metric_attrs.push(KeyValue::new(attr::ERROR_TYPE, error_type));
        }
        let instruments = &self.shared.instruments;
        instruments.sent.add(1, &metric_attrs);
        metric_attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"));
        instruments
            .operation_duration
            .record(self.start.elapsed().as_secs_f64(), &metric_attrs);
        span.end();
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped before the confirmation arrived: end the span without an outcome.
        self.finish(None, None);
    }
}

/// The broker's confirmation of a traced publish: resolves exactly like lapin's
/// [`PublisherConfirm`] (to [`Confirmation::NotRequested`] at once when publisher confirms are
/// off) and ends the PRODUCER span.
///
/// A [`Confirmation::Nack`] is recorded on the span as `error.type = "nack"`, an unroutable
/// message returned by the broker as `error.type = "returned"`, and a failed confirmation
/// with the error's kind.
#[must_use = "await the confirmation, or drop it to end the publish span without one"]
pub struct TracedConfirm {
    inner: PublisherConfirm,
    state: Finish,
}

impl fmt::Debug for TracedConfirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedConfirm")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl TracedConfirm {
    /// The context of the PRODUCER span (the one written into the message headers).
    pub fn context(&self) -> &Context {
        &self.state.cx
    }
}

impl Future for TracedConfirm {
    type Output = lapin::Result<Confirmation>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = {
            let _attached = this.state.cx.clone().attach();
            Pin::new(&mut this.inner).poll(cx)
        };
        let Poll::Ready(res) = res else {
            return Poll::Pending;
        };
        match &res {
            Ok(Confirmation::Nack(_)) => this
                .state
                .finish(Some("nack"), Some("the broker refused the message")),
            Ok(Confirmation::Ack(Some(_))) => this.state.finish(
                Some("returned"),
                Some("the broker returned the message as unroutable"),
            ),
            Ok(_) => this.state.finish(None, None),
            Err(err) => this
                .state
                .finish(Some(lapin_error_type(err)), Some(&err.to_string())),
        }
        Poll::Ready(res)
    }
}
