//! Delayed retries through a retry queue, in the original trace.

use std::time::Duration;

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tracewire_core::messaging::ATTEMPT_HEADER;

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

/// The common RabbitMQ delayed-retry pattern: a failed message is republished to a retry queue
/// whose messages expire after `delay` and are dead-lettered (through the default exchange)
/// back to the work queue.
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
/// let retry = RetryQueue::new("orders", Duration::from_secs(5))?.with_max_attempts(5);
/// retry.declare(&channel, QueueDeclareOptions { durable: true, ..Default::default() }).await?;
/// delivery
///     .process(|d| async move {
///         let err = std::io::Error::other("payment service unavailable");
///         let retried = match retry.republish(&channel, &d).await {
///             Ok(confirm) => confirm.await.is_ok(),
///             Err(_) => false, // attempts exhausted, or the broker refused the copy
///         };
///         if retried {
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
    delay: Duration,
    max_attempts: Option<u32>,
}

fn short(name: String) -> Result<ShortString, RetryError> {
    let len = name.len();
    ShortString::try_new(name).map_err(|_| RetryError::NameTooLong(len))
}

impl RetryQueue {
    /// Retries for `work_queue` through the queue `{work_queue}.retry`, after `delay`.
    pub fn new(work_queue: &str, delay: Duration) -> Result<Self, RetryError> {
        Ok(Self {
            work_queue: short(work_queue.to_owned())?,
            retry_queue: short(format!("{work_queue}.retry"))?,
            delay,
            max_attempts: None,
        })
    }

    /// Uses `name` as the retry queue.
    pub fn with_retry_queue(mut self, name: &str) -> Result<Self, RetryError> {
        self.retry_queue = short(name.to_owned())?;
        Ok(self)
    }

    /// Refuses to republish beyond `max` attempts in all ([`RetryError::Exhausted`]).
    pub fn with_max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = Some(max);
        self
    }

    /// The work queue retried messages return to.
    pub fn work_queue(&self) -> &str {
        self.work_queue.as_str()
    }

    /// The retry queue.
    pub fn retry_queue(&self) -> &str {
        self.retry_queue.as_str()
    }

    /// How long a message waits in the retry queue.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The arguments the retry queue is declared with: `x-message-ttl` (the delay in
    /// milliseconds), `x-dead-letter-exchange = ""` and `x-dead-letter-routing-key = work queue`.
    pub fn arguments(&self) -> FieldTable {
        let ttl = i64::try_from(self.delay.as_millis()).unwrap_or(i64::MAX);
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
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

    /// The attempt a retry of `delivery` would be.
    pub fn next_attempt(&self, delivery: &Delivery) -> u32 {
        carrier::attempt(delivery.properties.headers().as_ref()).saturating_add(1)
    }

    /// Republishes a copy of `delivery` (body and properties) to the retry queue, with the
    /// attempt header incremented and the current trace context; the broker's own bookkeeping
    /// headers (`x-death`, `x-first-death-*`, `x-last-death-*`, `x-delivery-count`) describe the
    /// old copy and are left out. Await the returned confirmation before settling the original
    /// with [`Outcome::retried`](crate::Outcome::retried).
    pub async fn republish(
        &self,
        channel: &TracedChannel,
        delivery: &Delivery,
    ) -> Result<TracedConfirm, RetryError> {
        let attempt = self.next_attempt(delivery);
        if let Some(max) = self.max_attempts
            && attempt > max
        {
            return Err(RetryError::Exhausted { attempt, max });
        }
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
        let properties = delivery.properties.clone().with_headers(headers);
        let confirm = channel
            .publish_inner(
                ShortString::default(),
                self.retry_queue.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
                Some(attempt),
            )
            .await?;
        Ok(confirm)
    }
}
