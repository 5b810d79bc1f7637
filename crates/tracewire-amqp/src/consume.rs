//! Instrumented consuming: [`TracedConsumer`], [`TracedDelivery`], [`ProcessSpan`], [`Outcome`].

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::{Acker, Consumer};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use tracewire_core::attributes as attr;
use tracewire_core::messaging::{ParentMode, metric_attributes, start_consumer_span};
use tracewire_core::operation::{Failure, Operation, Timed};

use crate::shared::Shared;
use crate::{SYSTEM, carrier, lapin_error_type};

/// What a consumer knows about itself, shared by its deliveries.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerInfo {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<str>,
    pub(crate) span_name: Cow<'static, str>,
    pub(crate) mode: ParentMode,
    /// `messaging.system`, `messaging.destination.name`, `messaging.consumer.group.name`.
    pub(crate) base_attrs: [KeyValue; 3],
    /// The metric attributes of a delivery (`messaging.client.consumed.messages`) and of its
    /// processing (`messaging.process.duration`): RabbitMQ pushes deliveries, so both are the
    /// `process` operation.
    process_attrs: Vec<KeyValue>,
}

impl ConsumerInfo {
    fn new(shared: Arc<Shared>, queue: &str) -> Self {
        let queue: Arc<str> = Arc::from(queue);
        let base_attrs = [
            KeyValue::new(attr::MESSAGING_SYSTEM, SYSTEM),
            KeyValue::new(attr::MESSAGING_DESTINATION_NAME, queue.clone()),
            KeyValue::new(attr::MESSAGING_CONSUMER_GROUP_NAME, queue.clone()),
        ];
        let process_attrs = metric_attributes(
            SYSTEM,
            "process",
            "process",
            queue.clone(),
            Some(queue.clone().into()),
        );
        Self {
            mode: shared.parent_mode,
            shared,
            span_name: Cow::Owned(format!("process {queue}")),
            process_attrs,
            base_attrs,
            queue,
        }
    }
}

/// A `lapin::Consumer` whose items are [`TracedDelivery`]s.
///
/// Every delivery's headers are read once, when it arrives: the creation context and the
/// attempt number stay with the delivery even if the connection drops afterwards. Errors of
/// the underlying consumer (a closed channel or connection) are yielded as they are, followed
/// by the end of the stream.
pub struct TracedConsumer {
    inner: Consumer,
    info: Arc<ConsumerInfo>,
}

impl fmt::Debug for TracedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedConsumer")
            .field("queue", &self.info.queue)
            .field("mode", &self.info.mode)
            .finish_non_exhaustive()
    }
}

impl TracedConsumer {
    /// Wraps a consumer created with lapin directly (prefer
    /// [`TracedChannel::basic_consume`](crate::TracedChannel::basic_consume)).
    pub fn new(consumer: Consumer) -> Self {
        Self::with_shared(consumer, Arc::new(Shared::new()))
    }

    pub(crate) fn with_shared(consumer: Consumer, shared: Arc<Shared>) -> Self {
        let queue = consumer.queue();
        Self {
            info: Arc::new(ConsumerInfo::new(shared, queue.as_str())),
            inner: consumer,
        }
    }

    /// How process spans relate to each message's creation context: its child and linked
    /// ([`ParentMode::Parent`], the default) or only linked ([`ParentMode::LinkOnly`]).
    pub fn with_parent_mode(mut self, mode: ParentMode) -> Self {
        Arc::make_mut(&mut self.info).mode = mode;
        self
    }

    /// The next delivery (`None` once the consumer is cancelled), without needing a
    /// `StreamExt` in scope. Cancel-safe: a delivery is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<lapin::Result<TracedDelivery>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &str {
        &self.info.queue
    }

    /// The wrapped consumer.
    pub fn get_ref(&self) -> &Consumer {
        &self.inner
    }

    /// Unwraps the consumer.
    pub fn into_inner(self) -> Consumer {
        self.inner
    }
}

impl Stream for TracedConsumer {
    type Item = lapin::Result<TracedDelivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(delivery))) => {
                let info = &this.info;
                info.shared.instruments.consumed.add(1, &info.process_attrs);
                Poll::Ready(Some(Ok(TracedDelivery::new(delivery, info.clone()))))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// A delivery with the context that created it.
///
/// Dereferences to the [`Delivery`] (data, properties, acker). Process it with
/// [`process`](Self::process), or by hand with [`start_process`](Self::start_process).
pub struct TracedDelivery {
    delivery: Delivery,
    creation: Context,
    attempt: u32,
    info: Arc<ConsumerInfo>,
}

impl fmt::Debug for TracedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedDelivery")
            .field("delivery_tag", &self.delivery.delivery_tag)
            .field("queue", &self.info.queue)
            .field("redelivered", &self.delivery.redelivered)
            .field("attempt", &self.attempt)
            .field("creation", &self.creation.span().span_context())
            .finish_non_exhaustive()
    }
}

impl Deref for TracedDelivery {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

impl TracedDelivery {
    fn new(delivery: Delivery, info: Arc<ConsumerInfo>) -> Self {
        let headers = delivery.properties.headers().as_ref();
        Self {
            creation: carrier::extract(headers),
            attempt: carrier::attempt(headers),
            delivery,
            info,
        }
    }

    /// The context extracted from the message headers: the producer's span (remote) and
    /// baggage. Empty when the message carried no valid context.
    pub fn creation_context(&self) -> &Context {
        &self.creation
    }

    /// Which try this is: the [`ATTEMPT_HEADER`](crate::ATTEMPT_HEADER) (1 when absent) plus
    /// the broker's redelivery count where the queue keeps one (quorum queues).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the broker redelivered this message (after a requeue or a lost consumer).
    pub fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }

    /// The queue the delivery came from.
    pub fn queue(&self) -> &str {
        &self.info.queue
    }

    pub(crate) fn info(&self) -> &Arc<ConsumerInfo> {
        &self.info
    }

    /// The delivery itself.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Unwraps the delivery.
    pub fn into_inner(self) -> Delivery {
        self.delivery
    }

    /// The delivery and its creation context.
    pub fn into_parts(self) -> (Delivery, Context) {
        (self.delivery, self.creation)
    }

    /// Starts the CONSUMER span `process {queue}` for this delivery, for code that settles
    /// messages itself. Run the work with [`ProcessSpan::context`] attached, then call
    /// [`ProcessSpan::finish`]; a span dropped unfinished ends without an outcome.
    pub fn start_process(&self) -> ProcessSpan {
        let d = &self.delivery;
        let info = &self.info;
        let mut attrs = Vec::with_capacity(12);
        attrs.extend_from_slice(&info.base_attrs);
        attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "process"));
        attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_NAME, "process"));
        if !d.routing_key.as_str().is_empty() {
            attrs.push(KeyValue::new(
                attr::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
                d.routing_key.as_str().to_owned(),
            ));
        }
        attrs.push(KeyValue::new(
            attr::MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
            i64::try_from(d.delivery_tag).unwrap_or(i64::MAX),
        ));
        if let Some(id) = d.properties.message_id() {
            attrs.push(KeyValue::new(
                attr::MESSAGING_MESSAGE_ID,
                id.as_str().to_owned(),
            ));
        }
        attrs.push(KeyValue::new(
            attr::MESSAGING_MESSAGE_BODY_SIZE,
            i64::try_from(d.data.len()).unwrap_or(i64::MAX),
        ));
        attrs.push(KeyValue::new(attr::MESSAGING_REDELIVERED, d.redelivered));
        attrs.push(KeyValue::new(
            attr::MESSAGING_ATTEMPT,
            i64::from(self.attempt),
        ));
        info.shared.push_server(&mut attrs);
        let cx = start_consumer_span(
            &info.shared.tracer,
            info.span_name.clone(),
            &self.creation,
            info.mode,
            attrs,
        );
        ProcessSpan::new(cx, info)
    }

    /// Runs `handler` on the delivery inside the CONSUMER span `process {queue}`, then settles
    /// the delivery as the returned [`Outcome`] says (still inside the span) and ends the span.
    ///
    /// The span's context is attached on every poll of the handler's future, so its `tracing`
    /// events carry the span's trace id and spans started in it (`#[traced]` functions, a
    /// [`RetryQueue::republish`](crate::RetryQueue::republish)) are its children. Returns the
    /// outcome, or the error of the ack/nack/reject.
    pub async fn process<F, Fut>(self, handler: F) -> lapin::Result<Outcome>
    where
        F: FnOnce(Delivery) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let span = self.start_process();
        let cx = span.context().clone();
        let acker = self.delivery.acker.clone();
        let outcome = handler(self.delivery).with_context(cx.clone()).await;
        let settled = outcome.action.apply(&acker).with_context(cx).await;
        span.finish_settled(&outcome, settled.as_ref().err());
        settled.map(|()| outcome)
    }
}

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// `basic.ack`: done.
    Ack,
    /// `basic.nack` with requeue: the broker redelivers it (same trace, `redelivered = true`).
    Requeue,
    /// `basic.nack` without requeue: dropped, or dead-lettered where the queue has a
    /// dead-letter exchange.
    Nack,
    /// `basic.reject` without requeue.
    Reject,
    /// A copy was republished for a delayed retry ([`RetryQueue`](crate::RetryQueue)); the
    /// original is acked.
    Retry,
    /// The handler settled the delivery itself; nothing is sent.
    Manual,
}

impl Action {
    /// The value of `messaging.message.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
            Action::Requeue => "requeue",
            Action::Nack => "nack",
            Action::Reject => "reject",
            Action::Retry => "retry",
            Action::Manual => "manual",
        }
    }

    /// Sends the settlement to the broker through `acker`. An acker that was already used
    /// is not an error (nothing is sent twice); one whose channel or connection is gone is
    /// (`InvalidChannelState`): the broker will redeliver the message.
    pub async fn apply(self, acker: &Acker) -> lapin::Result<()> {
        let (sent, operation) = match self {
            Action::Ack | Action::Retry => {
                (acker.ack(BasicAckOptions::default()).await?, "basic.ack")
            }
            Action::Requeue => (
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?,
                "basic.nack",
            ),
            Action::Nack => (acker.nack(BasicNackOptions::default()).await?, "basic.nack"),
            Action::Reject => (
                acker.reject(BasicRejectOptions { requeue: false }).await?,
                "basic.reject",
            ),
            Action::Manual => return Ok(()),
        };
        if !sent && acker.poisoned() {
            return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Error,
                operation,
            )));
        }
        Ok(())
    }
}

/// What a handler decided: how to settle the delivery, and the error that made it fail, if
/// any (recorded on the span as `error.type`, status and an `exception` event).
///
/// ```
/// use tracewire_amqp::{Action, Outcome};
/// let err = std::io::Error::other("database down");
/// let outcome = Outcome::requeue().failed(&err);
/// assert_eq!(outcome.action(), Action::Requeue);
/// assert_eq!(outcome.error_type(), Some("std::io::error::Error"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    action: Action,
    error: Option<(Cow<'static, str>, String)>,
}

impl Outcome {
    /// Settle with `action`.
    pub fn new(action: Action) -> Self {
        Self {
            action,
            error: None,
        }
    }

    /// Acknowledge.
    pub fn ack() -> Self {
        Self::new(Action::Ack)
    }

    /// Negatively acknowledge with requeue (the broker redelivers).
    pub fn requeue() -> Self {
        Self::new(Action::Requeue)
    }

    /// Negatively acknowledge without requeue (dead-letter where configured).
    pub fn nack() -> Self {
        Self::new(Action::Nack)
    }

    /// Reject without requeue.
    pub fn reject() -> Self {
        Self::new(Action::Reject)
    }

    /// A retry copy was republished; ack the original.
    pub fn retried() -> Self {
        Self::new(Action::Retry)
    }

    /// The handler settled the delivery itself.
    pub fn manual() -> Self {
        Self::new(Action::Manual)
    }

    /// Records `err` as the reason this attempt failed: `error.type` is the error's type name
    /// (last path segment), the status message its `Display`.
    pub fn failed<E: std::error::Error + ?Sized>(self, err: &E) -> Self {
        self.failed_with(
            tracewire_core::error::short_type_name::<E>(),
            err.to_string(),
        )
    }

    /// Records a failure with an explicit `error.type` (keep it low-cardinality) and message.
    pub fn failed_with(
        mut self,
        error_type: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        self.error = Some((error_type.into(), message.into()));
        self
    }

    /// How the delivery is settled.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The recorded `error.type`, if the attempt failed.
    pub fn error_type(&self) -> Option<&str> {
        self.error.as_ref().map(|(t, _)| t.as_ref())
    }
}

/// A CONSUMER span in progress (one delivery or one batch): an
/// [`Operation`](tracewire_core::operation::Operation) that ends exactly once — in
/// [`finish`](Self::finish), or when dropped (a panic in the handler is then recorded as
/// `error.type = "panic"`, a dropped future as `cancelled`).
pub struct ProcessSpan {
    cx: Context,
    op: Operation<Timed>,
}

impl fmt::Debug for ProcessSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSpan")
            .field("span", &self.cx.span().span_context())
            .finish_non_exhaustive()
    }
}

impl ProcessSpan {
    pub(crate) fn new(cx: Context, info: &ConsumerInfo) -> Self {
        let measure = info.shared.instruments.process(info.process_attrs.clone());
        Self {
            op: Operation::new(cx.clone(), measure),
            cx,
        }
    }

    /// The context holding the span: attach it (`FutureExt::with_context`) while processing.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Records the outcome (and its error, if any) and ends the span.
    pub fn finish(self, outcome: &Outcome) {
        self.finish_settled(outcome, None);
    }

    pub(crate) fn finish_settled(mut self, outcome: &Outcome, settle_error: Option<&lapin::Error>) {
        self.op.set_attribute(KeyValue::new(
            attr::MESSAGING_OUTCOME,
            outcome.action.as_str(),
        ));
        if let Some((kind, message)) = &outcome.error {
            self.op
                .fail(Failure::exception(kind.clone(), message.clone()));
        }
        if let Some(err) = settle_error {
            self.op
                .fail(Failure::exception(lapin_error_type(err), err.to_string()));
        }
        self.op.end();
    }
}
