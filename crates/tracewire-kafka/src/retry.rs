//! Retry and dead-letter topics that keep a record in its trace.
//!
//! When processing a record fails, [`RetryTopics`] republishes it to a retry topic — or, once
//! the allowed attempts are used up, to a dead-letter topic — with:
//!
//! - the record's key, payload and headers (other than trace headers);
//! - the `tracewire-attempt` header ([`ATTEMPT_HEADER`]) incremented: the failed attempt was
//!   `n`, the retried record says `n + 1` (a dead-lettered record keeps `n`, the number of
//!   attempts made);
//! - the context of a PRODUCER span that is a child of the failed attempt's process span.
//!
//! The consumer of the retry topic therefore processes attempt `n + 1` as a child of the
//! retry's producer span: producer → attempt 1 (failed) → retry send → attempt 2 → … is one
//! causal chain in the original trace, each process span carrying
//! `messaging.message.attempt`.
//!
//! [`TracedConsumer::process`](crate::TracedConsumer::process) does all of this for a handler
//! that returns `Err`, once given the retry topics with
//! [`TracedConsumer::with_retry`](crate::TracedConsumer::with_retry).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::Context;
use rdkafka::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::util::{AsyncRuntime, DefaultRuntime};
use tracewire_core::messaging::{ATTEMPT_HEADER, Outcome};
use tracewire_core::retry::{RetryPolicy, RetryStep};

use crate::carrier::{NOT_BEFORE_HEADER, attempt_of};
use crate::producer::TracedProducer;

/// Where a failed record was republished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Republished {
    /// The retry or dead-letter topic.
    pub topic: String,
    /// The attempt number written into the record's attempt header.
    pub attempt: u32,
    /// Whether this is the dead-letter topic.
    pub dead_letter: bool,
    /// Partition the record was stored in.
    pub partition: i32,
    /// Offset the record was stored at.
    pub offset: i64,
}

impl Republished {
    /// The outcome of the failed attempt: [`Outcome::Retry`] or [`Outcome::DeadLetter`].
    pub fn outcome(&self) -> Outcome {
        Outcome::republished(self.dead_letter)
    }
}

/// A retry topic and a dead-letter topic, and the producer that writes to them.
///
/// ```no_run
/// # fn demo(producer: tracewire_kafka::TracedProducer) {
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use tracewire_kafka::RetryPolicy;
///
/// let policy = RetryPolicy::new()
///     .max_attempts(5)
///     .backoff(Duration::from_secs(1), Duration::from_secs(30))
///     .dead_letter("orders.dlt");
/// let retry = tracewire_kafka::RetryTopics::new(producer, "orders.retry", policy);
/// # }
/// ```
pub struct RetryTopics<C: ClientContext + 'static = DefaultClientContext, R = DefaultRuntime> {
    producer: TracedProducer<C, R>,
    retry_topic: String,
    dead_letter_topic: String,
    policy: RetryPolicy,
    queue_timeout: Duration,
}

impl<C: ClientContext + 'static, R: AsyncRuntime> RetryTopics<C, R> {
    /// Failed records go to `retry_topic` as `policy` says (attempt limit, backoff), then to
    /// the policy's dead-letter topic (`{retry_topic}.dlt` when it names none). Kafka has no
    /// delayed delivery: a retried record carries [`NOT_BEFORE_HEADER`], and
    /// [`TracedConsumer::process`](crate::TracedConsumer::process) waits until then before
    /// running the handler. Create both topics before use.
    pub fn new(
        producer: TracedProducer<C, R>,
        retry_topic: impl Into<String>,
        policy: RetryPolicy,
    ) -> Self {
        let retry_topic = retry_topic.into();
        let dead_letter_topic = policy
            .dead_letter_destination()
            .map_or_else(|| format!("{retry_topic}.dlt"), str::to_owned);
        Self {
            producer,
            retry_topic,
            dead_letter_topic,
            policy,
            queue_timeout: Duration::from_secs(5),
        }
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// How long a republish may wait for room in the producer queue (5 s by default).
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Where a record whose attempt `failed_attempt` failed goes next, the attempt number it
    /// will carry, whether that is the dead-letter topic, and how long it waits.
    pub fn next_destination(&self, failed_attempt: u32) -> (&str, u32, bool, Duration) {
        match self.policy.next(failed_attempt) {
            RetryStep::Retry { attempt, delay } => (&self.retry_topic, attempt, false, delay),
            RetryStep::DeadLetter { attempts } => {
                (&self.dead_letter_topic, attempts, true, Duration::ZERO)
            }
        }
    }

    /// Republishes `msg`, whose processing failed, as a child of the current context, to the
    /// retry topic (the dead-letter topic once its attempts are used up).
    /// [`TracedConsumer::process`](crate::TracedConsumer::process) does this for a handler
    /// that fails, inside the failed attempt's process span, once given the retry topics with
    /// [`with_retry`](crate::TracedConsumer::with_retry).
    pub async fn republish<M: Message>(&self, msg: &M) -> Result<Republished, KafkaError> {
        let parent = Context::current();
        self.republish_in(&parent, msg, false).await
    }

    /// Republishes `msg` to the dead-letter topic at once, whatever its attempt, as a child of
    /// the current context.
    pub async fn dead_letter<M: Message>(&self, msg: &M) -> Result<Republished, KafkaError> {
        let parent = Context::current();
        self.republish_in(&parent, msg, true).await
    }

    pub(crate) async fn republish_in<M: Message>(
        &self,
        parent: &Context,
        msg: &M,
        dead_letter_now: bool,
    ) -> Result<Republished, KafkaError> {
        let failed_attempt = attempt_of(msg.headers());
        let (topic, attempt, dead_letter, delay) = if dead_letter_now {
            (
                self.dead_letter_topic.as_str(),
                failed_attempt,
                true,
                Duration::ZERO,
            )
        } else {
            self.next_destination(failed_attempt)
        };
        let payload = msg.payload();
        let key = msg.key();
        let span = self.producer.telemetry().start(
            parent,
            topic,
            key,
            payload.map_or(0, <[u8]>::len),
            None,
            Some(attempt),
        );
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        record.payload = payload;
        record.key = key;
        let attempt_text = attempt.to_string();
        let not_before = (SystemTime::now() + delay)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        let delivery = self
            .producer
            .send_in(
                span,
                record,
                self.queue_timeout,
                msg.headers(),
                &[
                    (ATTEMPT_HEADER, attempt_text.as_bytes()),
                    (NOT_BEFORE_HEADER, not_before.as_bytes()),
                ],
            )
            .await
            .map_err(|(err, _)| err)?;
        Ok(Republished {
            topic: topic.to_owned(),
            attempt,
            dead_letter,
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }
}

impl<C: ClientContext + 'static, R> fmt::Debug for RetryTopics<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryTopics")
            .field("retry_topic", &self.retry_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("policy", &self.policy)
            .field("queue_timeout", &self.queue_timeout)
            .finish_non_exhaustive()
    }
}
