//! Delayed retries through a retry queue, in the original trace.

use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tracewire_core::messaging::{ATTEMPT_HEADER, Outcome};
use tracewire_core::retry::{RetryPolicy, RetryStep};

use crate::carrier::{self, DELIVERY_COUNT_HEADER, X_DEATH_HEADER};
use crate::lapin_error_type;
use crate::publish::TracedChannel;

/// Why a retry was not republished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// A queue name is longer than AMQP allows (255 bytes).
    #[error("queue name is {0} bytes long; AMQP allows at most 255")]
    NameTooLong(usize),
    /// The message already had its last allowed attempt and the policy names no dead-letter
    /// queue: [`TracedConsumer::process`](crate::TracedConsumer::process) then rejects it
    /// (dead-lettered by the work queue's own dead-letter exchange, where configured).
    #[error("attempt {attempt} would exceed the limit of {max} attempts")]
    Exhausted {
        /// The attempt a retry would have been.
        attempt: u32,
        /// The configured limit.
        max: u32,
    },
    /// The broker refused the publish.
    #[error("republishing for retry failed: {0}")]
    Publish(#[from] lapin::Error),
    /// The broker did not confirm the copy (a negative confirmation, or a message returned as
    /// unroutable).
    #[error("the broker did not confirm the retry copy")]
    NotConfirmed,
}

impl RetryError {
    /// A low-cardinality `error.type` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            RetryError::NameTooLong(_) => "name_too_long",
            RetryError::Exhausted { .. } => "exhausted",
            RetryError::Publish(err) => lapin_error_type(err),
            RetryError::NotConfirmed => "not_confirmed",
        }
    }
}

/// Where [`RetryQueue`] republished a failed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Republished {
    /// The retry or dead-letter queue.
    pub queue: String,
    /// The attempt number written into the copy's attempt header.
    pub attempt: u32,
    /// Whether this is the dead-letter queue.
    pub dead_letter: bool,
}

impl Republished {
    /// The outcome of the failed attempt: [`Outcome::Retry`] or [`Outcome::DeadLetter`].
    pub fn outcome(&self) -> Outcome {
        Outcome::republished(self.dead_letter)
    }
}

/// The common RabbitMQ delayed-retry pattern, bounded by a [`RetryPolicy`]: a failed message is
/// republished to a retry queue where it expires after the policy's backoff for that attempt
/// (per-message `expiration`) and is dead-lettered (through the default exchange) back to the
/// work queue. Once the policy's attempts are used up, the message goes to the policy's
/// dead-letter queue, or [`republish`](Self::republish) returns [`RetryError::Exhausted`].
///
/// Give it to the consumer with
/// [`TracedConsumer::with_retry`](crate::TracedConsumer::with_retry): a handler's `Err` (or
/// [`Outcome::Retry`]) then goes through it, republished on the consumer's channel, and the
/// original is acked once the broker confirmed the copy (put the channel in confirm mode for
/// that to mean something).
///
/// RabbitMQ expires messages only at the head of a queue: a retry with a short delay waits
/// behind one with a longer delay. The backoff is a lower bound, never a busy loop.
///
/// The republish keeps the message's trace: it runs inside the failed attempt's process span,
/// so its PRODUCER span is that span's child and its context is what the copy carries:
/// producer → attempt 1 → retry publish → attempt 2 is one causal chain. The copy's
/// [`ATTEMPT_HEADER`] is the failed attempt's number plus one, and is recorded as
/// `messaging.message.attempt` on the retry's PRODUCER span and on the next process span.
///
/// ```no_run
/// # async fn demo(channel: tracewire_amqp::TracedChannel) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
/// use tracewire_amqp::{RetryPolicy, RetryQueue};
///
/// let policy = RetryPolicy::new()
///     .max_attempts(5)
///     .backoff(Duration::from_secs(1), Duration::from_secs(30))
///     .dead_letter("orders.dead");
/// let retry = RetryQueue::new("orders", policy)?;
/// retry.declare(&channel, QueueDeclareOptions { durable: true, ..Default::default() }).await?;
/// let mut consumer = channel
///     .basic_consume("orders".into(), "".into(), BasicConsumeOptions::default(), Default::default())
///     .await?
///     .with_retry(retry);
/// while let Some(delivery) = consumer.recv().await {
///     let delivery = delivery?;
///     consumer
///         .process(&delivery, async {
///             // an Err: a delayed retry, or the dead-letter queue after the last attempt
///             Err::<(), _>(std::io::Error::other("payment service unavailable"))
///         })
///         .await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RetryQueue {
    work_queue: ShortString,
    retry_queue: ShortString,
    dead_letter_queue: Option<ShortString>,
    policy: RetryPolicy,
}

fn short(name: String) -> Result<ShortString, RetryError> {
    let len = name.len();
    ShortString::try_new(name).map_err(|_| RetryError::NameTooLong(len))
}

impl RetryQueue {
    /// Retries for `work_queue` through the queue `{work_queue}.retry`, as `policy` says.
    pub fn new(work_queue: &str, policy: RetryPolicy) -> Result<Self, RetryError> {
        Ok(Self {
            work_queue: short(work_queue.to_owned())?,
            retry_queue: short(format!("{work_queue}.retry"))?,
            dead_letter_queue: policy
                .dead_letter_destination()
                .map(|d| short(d.to_owned()))
                .transpose()?,
            policy,
        })
    }

    /// Uses `name` as the retry queue.
    pub fn with_retry_queue(mut self, name: &str) -> Result<Self, RetryError> {
        self.retry_queue = short(name.to_owned())?;
        Ok(self)
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The work queue retried messages return to.
    pub fn work_queue(&self) -> &str {
        self.work_queue.as_str()
    }

    /// The retry queue.
    pub fn retry_queue(&self) -> &str {
        self.retry_queue.as_str()
    }

    /// The arguments the retry queue is declared with: `x-dead-letter-exchange = ""` and
    /// `x-dead-letter-routing-key = work queue` (each copy expires after its own backoff).
    pub fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(self.work_queue.as_str())),
        );
        args
    }

    /// Declares the retry queue with [`arguments`](Self::arguments). The work queue and the
    /// dead-letter queue are yours to declare.
    pub async fn declare(
        &self,
        channel: &lapin::Channel,
        options: QueueDeclareOptions,
    ) -> lapin::Result<()> {
        channel
            .queue_declare(self.retry_queue.clone(), options, self.arguments())
            .await?;
        Ok(())
    }

    /// What the policy does with `delivery` if its attempt fails now.
    pub fn next_step(&self, delivery: &Delivery) -> RetryStep {
        self.policy
            .next(carrier::attempt(delivery.properties.headers().as_ref()))
    }

    /// Republishes a copy of `delivery` (body and properties), as a child of the current
    /// context, to the retry queue — or, past the policy's last attempt, to its dead-letter
    /// queue — and waits for the broker's confirmation. The copy has the attempt header
    /// incremented (kept for a dead letter), the backoff as its `expiration` and the current
    /// trace context; the broker's own bookkeeping headers (`x-death`, `x-first-death-*`,
    /// `x-last-death-*`, `x-delivery-count`) describe the old copy and are left out. Settle
    /// the original afterwards ([`TracedConsumer::process`](crate::TracedConsumer::process)
    /// does all of this).
    pub async fn republish(
        &self,
        channel: &TracedChannel,
        delivery: &Delivery,
    ) -> Result<Republished, RetryError> {
        match self.next_step(delivery) {
            RetryStep::Retry { attempt, delay } => {
                let expiration = Some(delay.as_millis().to_string());
                let queue = self.retry_queue.clone();
                self.send(channel, delivery, queue, attempt, expiration, false)
                    .await
            }
            RetryStep::DeadLetter { attempts } => self.send_dead(channel, delivery, attempts).await,
        }
    }

    /// Republishes a copy of `delivery` to the policy's dead-letter queue at once, whatever
    /// its attempt ([`RetryError::Exhausted`] when the policy names none).
    pub async fn dead_letter(
        &self,
        channel: &TracedChannel,
        delivery: &Delivery,
    ) -> Result<Republished, RetryError> {
        let attempt = carrier::attempt(delivery.properties.headers().as_ref());
        self.send_dead(channel, delivery, attempt).await
    }

    async fn send_dead(
        &self,
        channel: &TracedChannel,
        delivery: &Delivery,
        attempts: u32,
    ) -> Result<Republished, RetryError> {
        match &self.dead_letter_queue {
            Some(queue) => {
                self.send(channel, delivery, queue.clone(), attempts, None, true)
                    .await
            }
            None => Err(RetryError::Exhausted {
                attempt: attempts.saturating_add(1),
                max: self.policy.attempt_limit(),
            }),
        }
    }

    async fn send(
        &self,
        channel: &TracedChannel,
        delivery: &Delivery,
        queue: ShortString,
        attempt: u32,
        expiration: Option<String>,
        dead_letter: bool,
    ) -> Result<Republished, RetryError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let broker_owned = |k: &str| {
            k == X_DEATH_HEADER
                || k == DELIVERY_COUNT_HEADER
                || k.starts_with("x-first-death-")
                || k.starts_with("x-last-death-")
        };
        if headers.inner().keys().any(|k| broker_owned(k.as_str())) {
            carrier::retain(&mut headers, |k| !broker_owned(k));
        }
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongString(LongString::from(attempt.to_string())),
        );
        let mut properties = delivery.properties.clone().with_headers(headers);
        if let Some(ms) = expiration {
            properties = properties.with_expiration(ShortString::from(ms));
        }
        let confirm = channel
            .publish_inner(
                ShortString::default(),
                queue.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
                Some(attempt),
            )
            .await?;
        match confirm.await? {
            Confirmation::Nack(_) | Confirmation::Ack(Some(_)) => Err(RetryError::NotConfirmed),
            _ => Ok(Republished {
                queue: queue.as_str().to_owned(),
                attempt,
                dead_letter,
            }),
        }
    }
}
