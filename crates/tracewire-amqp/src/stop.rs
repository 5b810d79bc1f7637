//! Stopping within a deadline, whatever the broker is doing.
//!
//! A clean AMQP stop sends `Connection.Close` and waits for the broker's `Close-Ok`; the broker
//! then cancels the connection's consumers and puts their unsettled deliveries back on their
//! queues. When the broker is stopping at that moment or cannot be reached (a network
//! partition, a paused node), that answer may never come, and lapin waits for it until its
//! heartbeat gives up — a minute by default. [`stop`] waits at most `timeout`, so a service
//! always gets on to flushing telemetry and exiting. Without a `Close-Ok` the broker notices
//! the dead connection by its heartbeat and requeues the deliveries then.
//!
//! ```no_run
//! # async fn demo(connection: lapin::Connection) {
//! use tracewire_amqp::{DEFAULT_STOP_TIMEOUT, stop};
//!
//! // … consume until a signal arrives, then:
//! if let Err(error) = stop(&connection, DEFAULT_STOP_TIMEOUT).await {
//!     tracing::warn!(%error, "the connection did not close cleanly");
//! }
//! # }
//! ```

use std::time::{Duration, Instant};

use lapin::Connection;
use lapin::types::ShortString;

/// How long [`stop`] waits for the broker to confirm the close by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Why [`stop`] returned before the broker had confirmed the close.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// The broker did not confirm the close within the timeout (stopping, paused or
    /// unreachable); it requeues the deliveries when the connection's heartbeat fails.
    #[error("the AMQP connection did not close within {timeout:?}")]
    TimedOut {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The close failed (the connection broke while closing).
    #[error("closing the AMQP connection failed: {0}")]
    Close(#[from] lapin::Error),
}

/// Closes `connection` (and with it its channels and consumers), waiting at most `timeout`
/// for the broker to confirm. Returns how long it took; a connection that is already closed
/// or broken is stopped at once.
pub async fn stop(connection: &Connection, timeout: Duration) -> Result<Duration, StopError> {
    let started = Instant::now();
    if !connection.status().connected() {
        return Ok(started.elapsed());
    }
    let close = connection.close(200, ShortString::from("stopping"));
    match tokio::time::timeout(timeout, close).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        // The broker closed the connection first (it is stopping): nothing is left to close.
        Ok(Err(_)) if !connection.status().connected() => Ok(started.elapsed()),
        Ok(Err(error)) => Err(StopError::Close(error)),
        Err(_) => Err(StopError::TimedOut { timeout }),
    }
}
