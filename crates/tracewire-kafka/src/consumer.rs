//! Instrumented consuming: every received record exposes its creation context; processing it
//! runs inside a CONSUMER span `process {topic}`.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use opentelemetry::context::FutureExt as _;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue, StringValue, Value};
use rdkafka::Offset;
use rdkafka::config::{ClientConfig, FromClientConfig};
use rdkafka::consumer::{
    CommitMode, Consumer, ConsumerContext, DefaultConsumerContext, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::util::{AsyncRuntime, DefaultRuntime};
use tracewire_core::attributes::{
    MESSAGING_ATTEMPT, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID, MESSAGING_KAFKA_OFFSET, MESSAGING_MESSAGE_BODY_SIZE,
    MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE,
};
use tracewire_core::messaging::{
    MessagingInstruments, Outcome, ParentMode, Processed, Settled, finish_process,
    metric_attributes, requested, start_batch_span, start_consumer_span,
};
use tracewire_core::operation::{Operation, Timed};

use crate::attrs;
use crate::carrier;
use crate::retry::RetryTopics;

/// A consumed record with the context its producer put into its headers.
///
/// It dereferences to rdkafka's [`BorrowedMessage`], so `payload()`, `key()`, `offset()`, …
/// work as usual (with [`Message`] in scope).
pub struct TracedMessage<'a> {
    message: BorrowedMessage<'a>,
    context: Context,
    attempt: u32,
}

impl<'a> TracedMessage<'a> {
    /// Wraps a record received some other way (a `BaseConsumer`, a partition queue):
    /// extracts its creation context and attempt number.
    pub fn new(message: BorrowedMessage<'a>) -> Self {
        let context = carrier::extract_context(message.headers());
        let attempt = carrier::attempt_of(message.headers());
        Self {
            message,
            context,
            attempt,
        }
    }

    /// The creation context extracted from the record headers (empty when the record carried
    /// none, or garbage).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The attempt number from the `tracewire-attempt` header (1 when absent or invalid).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The rdkafka record.
    pub fn inner(&self) -> &BorrowedMessage<'a> {
        &self.message
    }

    /// Unwraps the rdkafka record.
    pub fn into_inner(self) -> BorrowedMessage<'a> {
        self.message
    }
}

impl<'a> Deref for TracedMessage<'a> {
    type Target = BorrowedMessage<'a>;

    fn deref(&self) -> &BorrowedMessage<'a> {
        &self.message
    }
}

impl fmt::Debug for TracedMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedMessage")
            .field("message", &self.message)
            .field("span_context", self.context.span().span_context())
            .field("attempt", &self.attempt)
            .finish()
    }
}

pub(crate) struct ConsumerShared {
    pub(crate) tracer: BoxedTracer,
    pub(crate) instruments: MessagingInstruments,
}

/// A [`StreamConsumer`] whose records carry their creation context, processed inside
/// CONSUMER spans.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use rdkafka::Message;
/// use rdkafka::config::ClientConfig;
/// use rdkafka::consumer::{CommitMode, Consumer};
///
/// let consumer = tracewire_kafka::TracedConsumer::from_config(
///     ClientConfig::new()
///         .set("bootstrap.servers", "127.0.0.1:9092")
///         .set("group.id", "billing")
///         .set("enable.auto.commit", "false"),
/// )?
/// .with_commit(Some(CommitMode::Async));
/// consumer.inner().subscribe(&["orders"])?;
/// loop {
///     let msg = consumer.recv().await?;
///     consumer
///         .process(&msg, async {
///             // `tracing` events and nested spans here belong to the record's trace.
///             tracing::info!(offset = msg.offset(), "charging");
///             Ok::<(), std::io::Error>(())
///         })
///         .await?;
/// }
/// # }
/// ```
pub struct TracedConsumer<C: ConsumerContext + 'static = DefaultConsumerContext, R = DefaultRuntime>
{
    inner: StreamConsumer<C, R>,
    shared: Arc<ConsumerShared>,
    group: Option<Value>,
    parent_mode: ParentMode,
    commit: Option<CommitMode>,
    record_key: bool,
    retry: Option<Arc<RetryTopics>>,
}

impl TracedConsumer {
    /// Creates the consumer from `config` (default context and runtime; for others, build the
    /// `StreamConsumer` yourself and use [`new`](Self::new)); `group.id` becomes
    /// `messaging.consumer.group.name`.
    pub fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        let consumer = StreamConsumer::from_config(config)?;
        let mut traced = Self::new(consumer);
        if let Some(group) = config.get("group.id") {
            traced = traced.with_group_name(group.to_owned());
        }
        Ok(traced)
    }
}

impl<C: ConsumerContext + 'static, R> TracedConsumer<C, R> {
    /// Instruments `consumer`, with telemetry from the global providers. Name its group with
    /// [`with_group_name`](Self::with_group_name) (rdkafka does not expose it).
    pub fn new(consumer: StreamConsumer<C, R>) -> Self {
        Self {
            inner: consumer,
            shared: Arc::new(ConsumerShared {
                tracer: tracewire_core::tracer(),
                instruments: MessagingInstruments::new(),
            }),
            group: None,
            parent_mode: ParentMode::Parent,
            commit: None,
            record_key: false,
            retry: None,
        }
    }

    /// Sets `messaging.consumer.group.name`.
    pub fn with_group_name(mut self, group: impl Into<String>) -> Self {
        self.group = Some(Value::String(StringValue::from(Arc::<str>::from(
            group.into(),
        ))));
        self
    }

    /// How process spans relate to the creation context: its child (the default) or a new
    /// trace linking to it ([`ParentMode::LinkOnly`], for topics written by untrusted
    /// producers).
    pub fn with_parent_mode(mut self, mode: ParentMode) -> Self {
        self.parent_mode = mode;
        self
    }

    /// Commits a record's offset after its handler succeeded (`None`, the default, leaves
    /// committing to you or to `enable.auto.commit`). The commit outcome is recorded on the
    /// process span as `messaging.message.outcome` (`commit`, or `commit_failed` with an
    /// error status). Prefer [`CommitMode::Async`]: a sync commit blocks the task.
    pub fn with_commit(mut self, mode: Option<CommitMode>) -> Self {
        self.commit = mode;
        self
    }

    /// Records `messaging.kafka.message.key` on process spans (off by default: keys often
    /// hold personal data). Only UTF-8 keys are recorded.
    pub fn with_message_key(mut self, record: bool) -> Self {
        self.record_key = record;
        self
    }

    /// Sends failed records through `retry` (its [`RetryPolicy`](crate::RetryPolicy):
    /// attempt limit, backoff, dead-letter topic). Without it, a failed record is rejected:
    /// its offset is committed and nothing is republished.
    pub fn with_retry(mut self, retry: RetryTopics) -> Self {
        self.retry = Some(Arc::new(retry));
        self
    }

    /// The retry topics failed records go through, if set.
    pub fn retry(&self) -> Option<&RetryTopics> {
        self.retry.as_deref()
    }

    /// The wrapped consumer (subscribe, assign, seek, commit, …).
    pub fn inner(&self) -> &StreamConsumer<C, R> {
        &self.inner
    }

    /// Unwraps the consumer.
    pub fn into_inner(self) -> StreamConsumer<C, R> {
        self.inner
    }

    /// Receives the next record, counted in `messaging.client.consumed.messages`.
    pub async fn recv(&self) -> KafkaResult<TracedMessage<'_>> {
        let message = self.inner.recv().await?;
        Ok(self.received(message))
    }

    /// The records as a stream (it never ends; errors are items).
    pub fn stream(&self) -> impl Stream<Item = KafkaResult<TracedMessage<'_>>> + '_ {
        self.inner
            .stream()
            .map(move |item| item.map(|message| self.received(message)))
    }

    fn received<'a>(&self, message: BorrowedMessage<'a>) -> TracedMessage<'a> {
        let attributes = metric_attributes(
            attrs::SYSTEM,
            "poll",
            "receive",
            attrs::topic_value(message.topic()),
            self.group.clone(),
        );
        self.shared.instruments.consumed.add(1, &attributes);
        TracedMessage::new(message)
    }

    fn span_attributes(&self, msg: &TracedMessage<'_>) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(10);
        attributes.push(attrs::system());
        attributes.push(KeyValue::new(MESSAGING_OPERATION_TYPE, "process"));
        attributes.push(KeyValue::new(MESSAGING_OPERATION_NAME, "process"));
        attributes.push(KeyValue::new(
            MESSAGING_DESTINATION_NAME,
            attrs::topic_value(msg.topic()),
        ));
        if let Some(group) = &self.group {
            attributes.push(KeyValue::new(MESSAGING_CONSUMER_GROUP_NAME, group.clone()));
        }
        attributes.push(KeyValue::new(
            MESSAGING_DESTINATION_PARTITION_ID,
            attrs::partition_value(msg.partition()),
        ));
        attributes.push(KeyValue::new(MESSAGING_KAFKA_OFFSET, msg.offset()));
        attributes.push(KeyValue::new(
            MESSAGING_MESSAGE_BODY_SIZE,
            i64::try_from(msg.payload_len()).unwrap_or(i64::MAX),
        ));
        attributes.push(KeyValue::new(MESSAGING_ATTEMPT, i64::from(msg.attempt)));
        if self.record_key
            && let Some(kv) = attrs::message_key(msg.key())
        {
            attributes.push(kv);
        }
        attributes
    }

    fn start_process(&self, msg: &TracedMessage<'_>) -> (Context, Operation<Timed>) {
        let cx = start_consumer_span(
            &self.shared.tracer,
            format!("process {}", msg.topic()),
            &msg.context,
            self.parent_mode,
            self.span_attributes(msg),
        );
        let op = Operation::new(cx.clone(), self.process_measure(Some(msg.topic())));
        (cx, op)
    }

    fn process_measure(&self, topic: Option<&str>) -> Timed {
        self.shared.instruments.process(metric_attributes(
            attrs::SYSTEM,
            "process",
            "process",
            attrs::topic_value(topic.unwrap_or("")),
            self.group.clone(),
        ))
    }

    /// Runs `handler` inside the CONSUMER span `process {topic}` of `msg`, then settles the
    /// record (still inside the span) and ends the span.
    ///
    /// The span's parent is the record's creation context (see
    /// [`with_parent_mode`](Self::with_parent_mode)) and it always links to it. The span is
    /// attached while the handler runs, so its `tracing` events carry the record's trace id
    /// and spans it starts (`#[traced]` functions, HTTP calls, sends) are children of the
    /// process span. A record retried through [`RetryTopics`] waits out its backoff first.
    ///
    /// `Ok(())` acks (commits the offset when [`with_commit`](Self::with_commit) asks for it);
    /// `Ok(outcome)` settles as the [`Outcome`] says; `Err(error)` records `error.type`, an
    /// error status and an `exception` event and settles as [`Outcome::Retry`]: a copy to the
    /// [`with_retry`](Self::with_retry) topic (the dead-letter topic once the attempts are
    /// used up), or, without retry topics, a reject (the offset is committed, nothing is
    /// republished). A panic in the handler ends the span with `error.type = "panic"`, a
    /// dropped future with `cancelled`; nothing is committed then. The duration goes into
    /// `messaging.process.duration`.
    ///
    /// Returns how the record was settled and the handler's error, or the commit's error.
    pub async fn process<Fut, O, E>(
        &self,
        msg: &TracedMessage<'_>,
        handler: Fut,
    ) -> KafkaResult<Processed<E>>
    where
        Fut: Future<Output = Result<O, E>>,
        O: Into<Outcome>,
        E: fmt::Display,
    {
        wait_for_backoff(msg).await;
        let (cx, op) = self.start_process(msg);
        let (requested, failed) = requested(handler.with_context(cx.clone()).await);
        let settled = self.settle(&cx, std::slice::from_ref(msg), requested).await;
        finish_process(op, settled, failed)
    }

    /// Runs `handler` inside one CONSUMER span for a batch of records, then settles every
    /// record as for [`process`](Self::process). The span is a child of the current context
    /// and links every record's creation context; each link carries the record's
    /// `messaging.destination.partition.id` and `messaging.kafka.offset`. The span is named
    /// `process {topic}` when all records come from one topic, `process` otherwise, and
    /// carries `messaging.batch.message_count`.
    ///
    /// Committing commits the offsets after the highest record of every partition. The outcome
    /// reported (on the span and in [`Processed`]) is the worst of the records'
    /// ([`Outcome::worst`]): a failed batch whose last-attempt record went to the dead-letter
    /// topic is `DeadLetter`.
    pub async fn process_batch<Fut, O, E>(
        &self,
        msgs: &[TracedMessage<'_>],
        handler: Fut,
    ) -> KafkaResult<Processed<E>>
    where
        Fut: Future<Output = Result<O, E>>,
        O: Into<Outcome>,
        E: fmt::Display,
    {
        let topic = single_topic(msgs);
        let name: Cow<'static, str> = match topic {
            Some(topic) => Cow::Owned(format!("process {topic}")),
            None => Cow::Borrowed("process"),
        };
        let mut attributes = Vec::with_capacity(6);
        attributes.push(attrs::system());
        attributes.push(KeyValue::new(MESSAGING_OPERATION_TYPE, "process"));
        attributes.push(KeyValue::new(MESSAGING_OPERATION_NAME, "process"));
        if let Some(topic) = topic {
            attributes.push(KeyValue::new(
                MESSAGING_DESTINATION_NAME,
                attrs::topic_value(topic),
            ));
        }
        if let Some(group) = &self.group {
            attributes.push(KeyValue::new(MESSAGING_CONSUMER_GROUP_NAME, group.clone()));
        }
        let links = msgs.iter().map(|msg| {
            let mut link = Vec::with_capacity(3);
            if topic.is_none() {
                link.push(KeyValue::new(
                    MESSAGING_DESTINATION_NAME,
                    attrs::topic_value(msg.topic()),
                ));
            }
            link.push(KeyValue::new(
                MESSAGING_DESTINATION_PARTITION_ID,
                attrs::partition_value(msg.partition()),
            ));
            link.push(KeyValue::new(MESSAGING_KAFKA_OFFSET, msg.offset()));
            (msg.context.clone(), link)
        });
        let cx = Context::map_current(|parent| {
            start_batch_span(&self.shared.tracer, name, links, attributes, parent)
        });
        let op = Operation::new(cx.clone(), self.process_measure(topic));
        let (requested, failed) = requested(handler.with_context(cx.clone()).await);
        let settled = self.settle(&cx, msgs, requested).await;
        finish_process(op, settled, failed)
    }

    /// Settles `msgs` as `requested` says: republishes through the retry topics for `Retry`
    /// and `DeadLetter`, then commits where the outcome calls for it.
    async fn settle(
        &self,
        cx: &Context,
        msgs: &[TracedMessage<'_>],
        requested: Outcome,
    ) -> Settled<KafkaError> {
        let outcome = match (requested, self.retry.as_deref()) {
            (Outcome::Retry | Outcome::DeadLetter, Some(retry)) => {
                let dead_letter = requested == Outcome::DeadLetter;
                let mut outcome: Option<Outcome> = None;
                for msg in msgs {
                    match retry
                        .republish_in(cx, &msg.message, dead_letter)
                        .with_context(cx.clone())
                        .await
                    {
                        Ok(to) => {
                            outcome = Some(outcome.map_or(to.outcome(), |o| o.worst(to.outcome())))
                        }
                        // Not committed: the records are consumed again after a restart or
                        // a rebalance rather than lost.
                        Err(err) => {
                            let mut settled = Settled::new(Outcome::Requeue, Ok(()));
                            settled.failure = Some(attrs::failure(&err));
                            return settled;
                        }
                    }
                }
                outcome.unwrap_or(requested)
            }
            (Outcome::Retry | Outcome::DeadLetter, None) => Outcome::Reject,
            (outcome, _) => outcome,
        };
        let commit = match (outcome, self.commit) {
            (Outcome::Requeue | Outcome::Manual, _) | (_, None) => Ok(()),
            (_, Some(mode)) => batch_offsets(msgs).and_then(|tpl| {
                if tpl.count() == 0 {
                    Ok(())
                } else {
                    self.inner.commit(&tpl, mode)
                }
            }),
        };
        Settled::new(outcome, commit.map_err(|err| (attrs::failure(&err), err)))
    }
}

/// Waits out a retried record's backoff ([`carrier::NOT_BEFORE_HEADER`]) before its attempt.
async fn wait_for_backoff(msg: &TracedMessage<'_>) {
    let wait = carrier::wait_of(msg.headers());
    if !wait.is_zero() {
        DefaultRuntime::delay_for(wait).await;
    }
}

fn single_topic<'m>(msgs: &'m [TracedMessage<'_>]) -> Option<&'m str> {
    let first = msgs.first()?.topic();
    msgs.iter().all(|m| m.topic() == first).then_some(first)
}

/// The offsets to commit after a batch: one past the highest record of every partition.
fn batch_offsets(msgs: &[TracedMessage<'_>]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for msg in msgs {
        let next = msg.offset() + 1;
        let higher = match tpl.find_partition(msg.topic(), msg.partition()) {
            Some(elem) => match elem.offset() {
                Offset::Offset(current) => next > current,
                _ => true,
            },
            None => true,
        };
        if higher {
            tpl.add_partition_offset(msg.topic(), msg.partition(), Offset::Offset(next))?;
        }
    }
    Ok(tpl)
}

impl<C: ConsumerContext + 'static, R> fmt::Debug for TracedConsumer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedConsumer")
            .field("group", &self.group)
            .field("parent_mode", &self.parent_mode)
            .field("commit", &self.commit)
            .field("record_key", &self.record_key)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}
