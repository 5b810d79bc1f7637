//! Instrumented publishing: [`TracedChannel::basic_publish`] and the [`TracedConfirm`] future.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use opentelemetry::context::FutureExt as _;
use opentelemetry::{Context, KeyValue};
use tracewire_core::attributes as attr;
use tracewire_core::messaging::{ParentMode, metric_attributes, start_producer_span};
use tracewire_core::operation::{Failure, Operation, Timed};

use crate::carrier;
use crate::shared::Shared;
use crate::{SYSTEM, lapin_error_type};

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
    pub fn inner(&self) -> &Channel {
        &self.channel
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
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

        let measure = self.shared.instruments.send(metric_attributes(
            SYSTEM,
            "publish",
            "send",
            destination,
            None,
        ));
        let op = Operation::started_at(cx.clone(), measure, start);
        match self
            .channel
            .basic_publish(exchange, routing_key, options, payload, properties)
            .with_context(cx.clone())
            .await
        {
            Ok(confirm) => Ok(TracedConfirm {
                inner: confirm,
                cx,
                op: Some(op),
            }),
            Err(err) => {
                op.end_with(Err(Failure::exception(
                    lapin_error_type(&err),
                    err.to_string(),
                )));
                Err(err)
            }
        }
    }
}

impl Deref for TracedChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.channel
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
    cx: Context,
    /// The publish; taken when the confirmation resolves. Dropped unresolved, it ends as
    /// cancelled (and still counts as an attempted send).
    op: Option<Operation<Timed>>,
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
        &self.cx
    }
}

impl Future for TracedConfirm {
    type Output = lapin::Result<Confirmation>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = {
            let _attached = this.cx.clone().attach();
            Pin::new(&mut this.inner).poll(cx)
        };
        let Poll::Ready(res) = res else {
            return Poll::Pending;
        };
        let failure = match &res {
            Ok(Confirmation::Nack(_)) => {
                Some(Failure::exception("nack", "the broker refused the message"))
            }
            Ok(Confirmation::Ack(Some(_))) => Some(Failure::exception(
                "returned",
                "the broker returned the message as unroutable",
            )),
            Ok(_) => None,
            Err(err) => Some(Failure::exception(lapin_error_type(err), err.to_string())),
        };
        if let Some(op) = this.op.take() {
            op.end_with(failure.map_or(Ok(()), Err));
        }
        Poll::Ready(res)
    }
}
