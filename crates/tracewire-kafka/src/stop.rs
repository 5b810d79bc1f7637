//! Stopping a consumer within a deadline, whatever its broker is doing.
//!
//! Closing an rdkafka consumer leaves its group and commits what is pending, which needs the
//! group coordinator. When the broker has just gone, is stopping at that moment or cannot be
//! reached, librdkafka's close can wait for a long time (minutes, on some brokers) — in a
//! blocking call that would also hold the async runtime thread it runs on. [`stop`] runs the
//! unsubscribe and close on a thread of its own and waits for it at most `timeout`: the
//! caller always gets control back in time and can flush telemetry and exit. A close that did
//! not finish goes on in the background until the process ends; the broker then drops the
//! member when its session times out, as it would after a crash.
//!
//! ```no_run
//! # async fn demo(consumer: tracewire_kafka::TracedConsumer) {
//! use tracewire_kafka::{DEFAULT_STOP_TIMEOUT, stop};
//!
//! // … consume until a signal arrives, then:
//! if let Err(error) = stop(consumer, DEFAULT_STOP_TIMEOUT).await {
//!     tracing::warn!(%error, "the consumer did not leave its group cleanly");
//! }
//! # }
//! ```

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::util::AsyncRuntime;

use crate::TracedConsumer;

/// How long [`stop`] waits for the consumer to leave its group by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Why [`stop`] returned before the consumer had closed cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// The close did not finish within the timeout (the broker is gone, stopping or
    /// unreachable); it goes on in the background.
    #[error(
        "the Kafka consumer did not close within {timeout:?}; its group drops it when its session times out"
    )]
    TimedOut {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The thread closing the consumer could not be started, or panicked.
    #[error("the Kafka consumer could not be closed on its own thread")]
    Thread(#[source] std::io::Error),
}

/// Unsubscribes `consumer` and closes it (leaving its consumer group), waiting at most
/// `timeout`. Returns how long the close took. Runs the blocking librdkafka calls on a thread
/// of their own, so the async runtime is never blocked; on [`StopError::TimedOut`] that thread
/// is left to finish or to end with the process.
pub async fn stop<C, R>(
    consumer: TracedConsumer<C, R>,
    timeout: Duration,
) -> Result<Duration, StopError>
where
    C: ConsumerContext + 'static,
    R: AsyncRuntime,
    TracedConsumer<C, R>: Send + 'static,
{
    let started = Instant::now();
    let closing = std::thread::Builder::new()
        .name("tracewire-kafka-stop".into())
        .spawn(move || {
            let inner = consumer.into_inner();
            inner.unsubscribe();
            // Dropping the last handle closes the consumer: leave the group, then destroy.
            drop(inner);
        })
        .map_err(StopError::Thread)?;
    // Checked every few milliseconds with the consumer's own runtime timer: a stop is rare,
    // and this needs no channel between the thread and the runtime.
    while !closing.is_finished() {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(StopError::TimedOut { timeout });
        }
        R::delay_for(left.min(Duration::from_millis(5))).await;
    }
    closing
        .join()
        .map(|()| started.elapsed())
        .map_err(|_| StopError::Thread(std::io::Error::other("the closing thread panicked")))
}
