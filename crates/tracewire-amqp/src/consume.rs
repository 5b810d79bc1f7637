//! Instrumented consuming: [`TracedConsumer`] and its [`TracedDelivery`]s, processed and
//! settled as an [`Outcome`] says.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Consumer};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use tracewire_core::attributes as attr;
use tracewire_core::messaging::{
    Outcome, ParentMode, Processed, Settled, finish_process, metric_attributes, requested,
    start_batch_span, start_consumer_span,
};
use tracewire_core::operation::{Failure, Operation, Timed};

use crate::publish::TracedChannel;
use crate::retry::{RetryError, RetryQueue};
use crate::shared::Shared;
use crate::{SYSTEM, carrier, lapin_error_type};

/// What a consumer knows about itself, shared by its deliveries.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerInfo {
    pub(crate) shared: Arc<Shared>,
    /// The channel the consumer was opened on: retries are republished on it.
    channel: TracedChannel,
    pub(crate) queue: Arc<str>,
    pub(crate) span_name: Cow<'static, str>,
    pub(crate) mode: ParentMode,
    /// `messaging.system`, `messaging.destination.name`, `messaging.consumer.group.name`.
    pub(crate) base_attrs: [KeyValue; 3],
    /// The metric attributes of a delivery (`messaging.client.consumed.messages`) and of its
    /// processing (`messaging.process.duration`): RabbitMQ pushes deliveries, so both are the
    /// `process` operation.
    process_attrs: Vec<KeyValue>,
    /// Where failed deliveries go.
    retry: Option<Arc<RetryQueue>>,
}

impl ConsumerInfo {
    fn new(channel: TracedChannel, queue: &str) -> Self {
        let shared = channel.shared().clone();
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
            channel,
            span_name: Cow::Owned(format!("process {queue}")),
            process_attrs,
            base_attrs,
            queue,
            retry: None,
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
    /// Wraps a consumer created with lapin directly on `channel`'s channel (prefer
    /// [`TracedChannel::basic_consume`]): the consumer shares the channel's telemetry and
    /// republishes retries on it.
    pub fn new(consumer: Consumer, channel: &TracedChannel) -> Self {
        let queue = consumer.queue();
        Self {
            info: Arc::new(ConsumerInfo::new(channel.clone(), queue.as_str())),
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
    pub fn inner(&self) -> &Consumer {
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
/// [`TracedConsumer::process`].
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
    pub fn context(&self) -> &Context {
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

    /// The delivery itself.
    pub fn inner(&self) -> &Delivery {
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

    /// Starts the CONSUMER span `process {queue}` for this delivery and the operation that
    /// ends it.
    pub(crate) fn start_process(&self) -> (Context, Operation<Timed>) {
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
        let op = info.operation(cx.clone());
        (cx, op)
    }
}

impl ConsumerInfo {
    pub(crate) fn operation(&self, cx: Context) -> Operation<Timed> {
        Operation::new(
            cx,
            self.shared.instruments.process(self.process_attrs.clone()),
        )
    }
}

impl TracedConsumer {
    /// Sends failed deliveries through `retry` (its [`RetryPolicy`](crate::RetryPolicy):
    /// attempt limit, backoff, dead-letter queue). Without it, a failed delivery is rejected
    /// (dead-lettered by the queue's own dead-letter exchange, if it has one).
    pub fn with_retry(mut self, retry: RetryQueue) -> Self {
        Arc::make_mut(&mut self.info).retry = Some(Arc::new(retry));
        self
    }

    /// The retry queue failed deliveries go through, if one is set.
    pub fn retry(&self) -> Option<&RetryQueue> {
        self.info.retry.as_deref()
    }

    /// Runs `handler` inside the CONSUMER span `process {queue}` of `delivery`, then settles
    /// the delivery (still inside the span) and ends the span.
    ///
    /// The span's parent is the delivery's creation context (see
    /// [`with_parent_mode`](Self::with_parent_mode)) and it always links to it. The span is
    /// attached on every poll of `handler`, so its `tracing` events carry the span's trace id
    /// and spans started in it (`#[traced]` functions, HTTP calls, publishes) are its children.
    ///
    /// `Ok(())` acks; `Ok(outcome)` settles as the [`Outcome`] says; `Err(error)` records
    /// `error.type`, an error status and an `exception` event and settles as
    /// [`Outcome::Retry`]: a delayed copy through the [`with_retry`](Self::with_retry) queue
    /// (the dead-letter queue once the attempts are used up), or a reject without one. A
    /// panic in the handler ends the span with `error.type = "panic"`, a dropped future with
    /// `cancelled`; the delivery is then left unsettled (the broker redelivers it when the
    /// channel closes).
    ///
    /// Returns how the delivery was settled and the handler's error, or the error of the
    /// ack/nack/reject.
    pub async fn process<Fut, O, E>(
        &self,
        delivery: &TracedDelivery,
        handler: Fut,
    ) -> lapin::Result<Processed<E>>
    where
        Fut: Future<Output = Result<O, E>>,
        O: Into<Outcome>,
        E: fmt::Display,
    {
        let (cx, op) = delivery.start_process();
        let (requested, failed) = requested(handler.with_context(cx.clone()).await);
        let settled = settle(self.retry_on(), &delivery.delivery, requested)
            .with_context(cx)
            .await;
        finish_process(op, settled, failed)
    }

    /// Runs `handler` on several deliveries inside one CONSUMER span `process {queue}` (a
    /// child of the current context) that links every message's creation context, each link
    /// carrying the message's `messaging.rabbitmq.message.delivery_tag`;
    /// `messaging.batch.message_count` is set. Every delivery is then settled as for
    /// [`process`](Self::process), still inside the span; the outcome reported (on the span and
    /// in [`Processed`]) is the worst of the deliveries' ([`Outcome::worst`]): a failed batch
    /// whose last-attempt message went to the dead-letter queue is `DeadLetter`.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: tracewire_amqp::TracedConsumer) -> Result<(), lapin::Error> {
    /// let mut batch = Vec::new();
    /// while let Some(delivery) = consumer.recv().await {
    ///     batch.push(delivery?);
    ///     if batch.len() == 50 {
    ///         consumer
    ///             .process_batch(&batch, async {
    ///                 tracing::info!(count = batch.len(), "bulk insert");
    ///                 Ok::<(), std::io::Error>(())
    ///             })
    ///             .await?;
    ///         batch.clear();
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn process_batch<Fut, O, E>(
        &self,
        deliveries: &[TracedDelivery],
        handler: Fut,
    ) -> lapin::Result<Processed<E>>
    where
        Fut: Future<Output = Result<O, E>>,
        O: Into<Outcome>,
        E: fmt::Display,
    {
        let info = deliveries.first().map_or(&self.info, |d| &d.info);
        let mut attrs = Vec::with_capacity(8);
        attrs.extend_from_slice(&info.base_attrs);
        attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "process"));
        attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_NAME, "process"));
        info.shared.push_server(&mut attrs);
        let links = deliveries.iter().map(|d| {
            let tag = i64::try_from(d.delivery_tag).unwrap_or(i64::MAX);
            (
                d.creation.clone(),
                vec![KeyValue::new(
                    attr::MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
                    tag,
                )],
            )
        });
        let cx = Context::map_current(|parent| {
            start_batch_span(
                &info.shared.tracer,
                info.span_name.clone(),
                links,
                attrs,
                parent,
            )
        });
        let op = info.operation(cx.clone());
        let (requested, failed) = requested(handler.with_context(cx.clone()).await);
        let mut combined: Option<Settled<lapin::Error>> = None;
        for delivery in deliveries {
            let settled = settle(self.retry_on(), &delivery.delivery, requested)
                .with_context(cx.clone())
                .await;
            match &mut combined {
                None => combined = Some(settled),
                Some(first) => {
                    first.outcome = first.outcome.worst(settled.outcome);
                    if first.error.is_none() && settled.error.is_some() {
                        first.failure = settled.failure;
                        first.error = settled.error;
                    }
                }
            }
        }
        let settled = combined.unwrap_or_else(|| Settled::new(requested, Ok(())));
        finish_process(op, settled, failed)
    }

    fn retry_on(&self) -> Option<(&RetryQueue, &TracedChannel)> {
        self.retry().map(|retry| (retry, &self.info.channel))
    }
}

/// A settlement sent to the broker (or not).
fn sent(outcome: Outcome, result: lapin::Result<()>) -> Settled<lapin::Error> {
    Settled::new(
        outcome,
        result.map_err(|err| {
            (
                Failure::exception(lapin_error_type(&err), err.to_string()),
                err,
            )
        }),
    )
}

/// Settles `delivery` as `requested` says, through `retry` for `Retry` and `DeadLetter`.
async fn settle(
    retry: Option<(&RetryQueue, &TracedChannel)>,
    delivery: &Delivery,
    requested: Outcome,
) -> Settled<lapin::Error> {
    let acker = &delivery.acker;
    let republished = match (requested, retry) {
        (Outcome::Retry | Outcome::DeadLetter, Some((retry, channel))) => {
            if requested == Outcome::DeadLetter {
                retry.dead_letter(channel, delivery).await
            } else {
                retry.republish(channel, delivery).await
            }
        }
        (Outcome::Retry | Outcome::DeadLetter, None) => {
            return sent(Outcome::Reject, apply(Outcome::Reject, acker).await);
        }
        (outcome, _) => return sent(outcome, apply(outcome, acker).await),
    };
    match republished {
        Ok(to) => sent(to.outcome(), apply(Outcome::Ack, acker).await),
        // Past the last attempt without a dead-letter queue: the queue's own dead-letter
        // exchange, if any, takes it.
        Err(RetryError::Exhausted { .. }) => {
            sent(Outcome::Reject, apply(Outcome::Reject, acker).await)
        }
        // The copy may not exist: give the original back rather than lose it.
        Err(err) => {
            let mut settled = sent(Outcome::Requeue, apply(Outcome::Requeue, acker).await);
            if settled.failure.is_none() {
                settled.failure = Some(Failure::exception(err.error_type(), err.to_string()));
            }
            settled
        }
    }
}

/// Sends the settlement for `outcome` through `acker`. An acker that was already used is not
/// an error (nothing is sent twice); one whose channel or connection is gone is
/// (`InvalidChannelState`): the broker will redeliver the message.
async fn apply(outcome: Outcome, acker: &Acker) -> lapin::Result<()> {
    let (sent, operation) = match outcome {
        Outcome::Requeue => (
            acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?,
            "basic.nack",
        ),
        Outcome::Reject => (
            acker.reject(BasicRejectOptions { requeue: false }).await?,
            "basic.reject",
        ),
        Outcome::Manual => return Ok(()),
        _ => (acker.ack(BasicAckOptions::default()).await?, "basic.ack"),
    };
    if !sent && acker.poisoned() {
        return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
            lapin::ChannelState::Error,
            operation,
        )));
    }
    Ok(())
}

impl TracedChannel {
    /// Starts a consumer like [`Channel::basic_consume`](lapin::Channel::basic_consume); its
    /// deliveries carry their extracted creation context and are processed in CONSUMER spans
    /// `process {queue}` by [`TracedConsumer::process`].
    pub async fn basic_consume(
        &self,
        queue: ShortString,
        consumer_tag: ShortString,
        options: BasicConsumeOptions,
        arguments: FieldTable,
    ) -> lapin::Result<TracedConsumer> {
        let consumer = self
            .inner()
            .basic_consume(queue, consumer_tag, options, arguments)
            .await?;
        Ok(TracedConsumer::new(consumer, self))
    }
}
