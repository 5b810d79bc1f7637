//! Delayed retries through a retry queue, in the original trace.

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tracewire_core::messaging::ATTEMPT_HEADER;
use tracewire_core::retry::{RetryPolicy, RetryStep};

use crate::carrier::{self, DELIVERY_COUNT_HEADER, X_DEATH_HEADER};
use crate::publish::{TracedChannel, TracedConfirm};

/// Why a retry was not republished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// A queue name is longer than AMQP allows (255 bytes).
    #[error("queue name is {0} bytes long; AMQP allows at most 255")]
    NameTooLong(usize),
    /// The message already had its last allowed attempt: settle it otherwise (for example
    /// [`Outcome::nack`](crate::Outcome::nack), which dead-letters it where configured).
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
}

/// The common RabbitMQ delayed-retry pattern, bounded by a [`RetryPolicy`]: a failed message is
/// republished to a retry queue where it expires after the policy's backoff for that attempt
/// (per-message `expiration`) and is dead-lettered (through the default exchange) back to the
/// work queue. Once the policy's attempts are used up, the message goes to the policy's
/// dead-letter queue, or [`republish`](Self::republish) returns [`RetryError::Exhausted`]
/// (settle it with [`Outcome::nack`](crate::Outcome::nack) to use the work queue's own
/// dead-letter exchange).
///
/// RabbitMQ expires messages only at the head of a queue: a retry with a short delay waits
/// behind one with a longer delay. The backoff is a lower bound, never a busy loop.
///
/// [`republish`](Self::republish) keeps the message's trace: called inside
/// [`TracedDelivery::process`](crate::TracedDelivery::process), its PRODUCER span is a child
/// of the failed attempt's process span, and that span's context is what the copy carries, so
/// producer → attempt 1 → retry publish → attempt 2 is one causal chain. The copy's
/// [`ATTEMPT_HEADER`] is the failed attempt's number plus one, and is recorded as
/// `messaging.message.attempt` on the retry's PRODUCER span and on the next process span.
///
/// ```no_run
/// # async fn demo(channel: tracewire_amqp::TracedChannel, delivery: tracewire_amqp::TracedDelivery)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use lapin::options::QueueDeclareOptions;
/// use tracewire_amqp::{Outcome, RetryQueue};
///
/// use tracewire_amqp::RetryPolicy;
///
/// let policy = RetryPolicy::new()
///     .max_attempts(5)
///     .backoff(Duration::from_secs(1), Duration::from_secs(30))
///     .dead_letter("orders.dead");
/// let retry = RetryQueue::new("orders", policy)?;
/// retry.declare(&channel, QueueDeclareOptions { durable: true, ..Default::default() }).await?;
/// delivery
///     .process(|d| async move {
///         let err = std::io::Error::other("payment service unavailable");
///         // a delayed retry, or the dead-letter queue after the last attempt
///         let republished = match retry.republish(&channel, &d).await {
///             Ok(confirm) => confirm.await.is_ok(),
///             Err(_) => false,
///         };
///         if republished {
///             Outcome::retried().failed(&err)
///         } else {
///             Outcome::nack().failed(&err) // dead-lettered where configured
///         }
///     })
///     .await?;
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

    /// Declares the retry queue with [`arguments`](Self::arguments). The work queue is yours to
    /// declare.
    pub async fn declare(
        &self,
        channel: &Channel,
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

    /// Republishes a copy of `delivery` (body and properties) to the retry queue — or, past
    /// the policy's last attempt, to its dead-letter queue — with the attempt header incremented
    /// (kept for a dead letter), the backoff as the copy's `expiration` and the current trace context; the broker's own bookkeeping
    /// headers (`x-death`, `x-first-death-*`, `x-last-death-*`, `x-delivery-count`) describe the
    /// old copy and are left out. Await the returned confirmation before settling the original
    /// with [`Outcome::retried`](crate::Outcome::retried).
    pub async fn republish(
        &self,
        channel: &TracedChannel,
        delivery: &Delivery,
    ) -> Result<TracedConfirm, RetryError> {
        let (attempt, queue, expiration) = match self.next_step(delivery) {
            RetryStep::Retry { attempt, delay } => (
                attempt,
                self.retry_queue.clone(),
                Some(delay.as_millis().to_string()),
            ),
            RetryStep::DeadLetter { attempts } => match &self.dead_letter_queue {
                Some(queue) => (attempts, queue.clone(), None),
                None => {
                    return Err(RetryError::Exhausted {
                        attempt: attempts.saturating_add(1),
                        max: self.policy.attempt_limit(),
                    });
                }
            },
        };
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
                queue,
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
                Some(attempt),
            )
            .await?;
        Ok(confirm)
    }
}
