//! Flush and shutdown with a deadline, whatever the collector does.
//!
//! The SDK's providers wait on their exporters, and an exporter talking to a collector that
//! accepts connections and never answers waits for its own timeout (10 s by default) per
//! batch; the meter provider ignores the timeout it is given. So each provider is shut down on
//! its own thread and the caller waits for both up to one deadline: past it, the threads are
//! left behind (they end with the process) and whatever was still queued is counted as lost.

use std::fmt;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracewire_core::dropped::{self, Signal};

use crate::dropped::InFlight;

/// The default deadline of [`Telemetry::shutdown`](crate::Telemetry::shutdown) and
/// [`Telemetry::flush`](crate::Telemetry::flush).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a flush or shutdown achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How long it took.
    pub elapsed: Duration,
    /// Spans dropped since the process started, every reason together (see
    /// [`drops`](crate::drops)); at shutdown this includes the spans still queued that were
    /// never sent.
    pub dropped_spans: u64,
    /// Metric data points dropped since the process started.
    pub dropped_metrics: u64,
    /// Log lines dropped since the process started.
    pub dropped_logs: u64,
}

/// A flush or shutdown that did not fully succeed: it ran out of time or an exporter failed.
/// The pipeline is shut down all the same; the report says what was lost.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}; {} spans, {} metric points and {} log lines dropped in all", report.dropped_spans, report.dropped_metrics, report.dropped_logs)]
pub struct ShutdownError {
    what: String,
    report: ShutdownReport,
}

impl ShutdownError {
    /// What was lost.
    pub fn report(&self) -> &ShutdownReport {
        &self.report
    }

    /// Whether the deadline passed before the exporters finished.
    pub fn timed_out(&self) -> bool {
        self.what.contains("did not finish")
    }
}

fn report(started: Instant) -> ShutdownReport {
    ShutdownReport {
        elapsed: started.elapsed(),
        dropped_spans: dropped::total(Signal::Spans),
        dropped_metrics: dropped::total(Signal::Metrics),
        dropped_logs: dropped::total(Signal::Logs),
    }
}

/// Which operation [`run`] performs.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    /// Export everything pending.
    Flush,
    /// Export everything pending and stop.
    Shutdown,
}

/// Runs `op` on every provider, each on its own thread, and waits at most `timeout`.
pub(crate) fn run(
    op: Op,
    traces: &SdkTracerProvider,
    metrics: &SdkMeterProvider,
    logs: Option<&SdkLoggerProvider>,
    queued: Option<&InFlight>,
    timeout: Duration,
) -> Result<ShutdownReport, ShutdownError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let (tx, rx) = mpsc::channel::<(&'static str, OTelSdkResult)>();
    let mut pending = 0;
    {
        let traces = traces.clone();
        let tx = tx.clone();
        pending += spawn("tracewire-flush-traces", tx, move || match op {
            Op::Flush => ("traces", traces.force_flush()),
            Op::Shutdown => ("traces", traces.shutdown_with_timeout(timeout)),
        });
    }
    if let Some(logs) = logs {
        let logs = logs.clone();
        let tx = tx.clone();
        pending += spawn("tracewire-flush-logs", tx, move || match op {
            Op::Flush => ("logs", logs.force_flush()),
            Op::Shutdown => ("logs", logs.shutdown_with_timeout(timeout)),
        });
    }
    {
        let metrics = metrics.clone();
        pending += spawn("tracewire-flush-metrics", tx, move || match op {
            Op::Flush => ("metrics", metrics.force_flush()),
            Op::Shutdown => ("metrics", metrics.shutdown_with_timeout(timeout)),
        });
    }
    let mut failures = Vec::new();
    let mut traces_done = false;
    while pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((signal, result)) => {
                pending -= 1;
                traces_done |= signal == "traces";
                if let Err(e) = result {
                    failures.push(format!("{signal}: {e}"));
                }
            }
            Err(_) => break,
        }
    }
    let timed_out = pending > 0;
    // A trace shutdown that finished wrote off what it could not send itself.
    if let (Op::Shutdown, Some(queued)) = (op, queued)
        && !traces_done
    {
        queued.write_off();
    }
    let report = report(started);
    let verb = match op {
        Op::Flush => "flush",
        Op::Shutdown => "shutdown",
    };
    let what = if timed_out {
        Some(format!(
            "telemetry {verb} did not finish within {timeout:?} (collector unreachable or slow)"
        ))
    } else if !failures.is_empty() {
        Some(format!("telemetry {verb} failed: {}", failures.join(", ")))
    } else {
        None
    };
    match what {
        Some(what) => Err(ShutdownError { what, report }),
        None => Ok(report),
    }
}

/// Spawns `f` on a named thread sending its result to `tx`; returns 1 when it started.
fn spawn<F>(name: &str, tx: mpsc::Sender<(&'static str, OTelSdkResult)>, f: F) -> usize
where
    F: FnOnce() -> (&'static str, OTelSdkResult) + Send + 'static,
{
    let started = thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _ = tx.send(f());
    });
    usize::from(started.is_ok())
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "done in {:?}; {} spans, {} metric points and {} log lines dropped in all",
            self.elapsed, self.dropped_spans, self.dropped_metrics, self.dropped_logs
        )
    }
}
