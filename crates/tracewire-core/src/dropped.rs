//! Counts of telemetry the pipeline had to drop, by signal and reason.
//!
//! Every place that gives up on a span, a metric export or a log line adds to one of these
//! counters (a relaxed atomic add: nothing on the request path waits). The facade reports them
//! as the observable counter `tracewire.telemetry.dropped` with the attributes `signal` and
//! `reason`, on `/metrics` (`tracewire_telemetry_dropped_total`) and over OTLP.
//!
//! The counters are process-wide and only grow: compare two readings to see what one period
//! lost.

use std::sync::atomic::{AtomicU64, Ordering};

/// The kind of telemetry that was dropped (the `signal` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Spans.
    Spans,
    /// Metric data points.
    Metrics,
    /// Log lines.
    Logs,
}

impl Signal {
    /// Every signal, in attribute order.
    pub const ALL: [Signal; 3] = [Signal::Spans, Signal::Metrics, Signal::Logs];

    /// The `signal` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// Why it was dropped (the `reason` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The bounded export queue was full (the collector is slower than the service).
    QueueFull,
    /// The exporter gave up on a batch (collector down, refused, timed out).
    ExportFailed,
    /// Suppressed by the log rate limit (`TRACEWIRE_LOG_RATE_LIMIT`).
    RateLimited,
    /// The log writer returned an error.
    WriteFailed,
    /// Still queued, or ended after, when the pipeline shut down.
    Shutdown,
}

impl Reason {
    /// Every reason, in attribute order.
    pub const ALL: [Reason; 5] = [
        Reason::QueueFull,
        Reason::ExportFailed,
        Reason::RateLimited,
        Reason::WriteFailed,
        Reason::Shutdown,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::ExportFailed => "export_failed",
            Reason::RateLimited => "rate_limited",
            Reason::WriteFailed => "write_failed",
            Reason::Shutdown => "shutdown",
        }
    }
}

const SIGNALS: usize = Signal::ALL.len();
const REASONS: usize = Reason::ALL.len();

static COUNTS: [[AtomicU64; REASONS]; SIGNALS] =
    [const { [const { AtomicU64::new(0) }; REASONS] }; SIGNALS];

/// The name of the instrument the counters are reported as.
pub const INSTRUMENT: &str = "tracewire.telemetry.dropped";

/// Adds `n` dropped items of `signal` for `reason`.
#[inline]
pub fn record(signal: Signal, reason: Reason, n: u64) {
    if n > 0 {
        COUNTS[signal as usize][reason as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// Items of `signal` dropped for `reason` since the process started.
pub fn count(signal: Signal, reason: Reason) -> u64 {
    COUNTS[signal as usize][reason as usize].load(Ordering::Relaxed)
}

/// Items of `signal` dropped for any reason since the process started.
pub fn total(signal: Signal) -> u64 {
    Reason::ALL.iter().map(|&r| count(signal, r)).sum()
}

/// Every non-zero counter: `(signal, reason, count)`.
pub fn snapshot() -> Vec<(Signal, Reason, u64)> {
    let mut out = Vec::new();
    for signal in Signal::ALL {
        for reason in Reason::ALL {
            let n = count(signal, reason);
            if n > 0 {
                out.push((signal, reason, n));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_signal_and_reason() {
        let before = count(Signal::Logs, Reason::WriteFailed);
        let total_before = total(Signal::Logs);
        record(Signal::Logs, Reason::WriteFailed, 3);
        record(Signal::Logs, Reason::WriteFailed, 0);
        assert_eq!(count(Signal::Logs, Reason::WriteFailed), before + 3);
        assert!(total(Signal::Logs) >= total_before + 3);
        assert!(
            snapshot()
                .iter()
                .any(|&(s, r, n)| s == Signal::Logs && r == Reason::WriteFailed && n >= 3)
        );
        assert_eq!(Signal::Spans.as_str(), "spans");
        assert_eq!(Reason::QueueFull.as_str(), "queue_full");
    }
}
