//! Every dropped piece of telemetry, counted: the span queue gate, counting exporters and the
//! `tracewire.telemetry.dropped` instrument.
//!
//! The SDK's batch span processor drops spans silently when its bounded queue is full. The
//! [`QueueGate`] sits in front of it and knows the queue's capacity: it counts the spans it
//! hands over minus the spans the exporter has received (those still waiting in the queue),
//! and at capacity drops the span itself and counts it (`reason=queue_full`), so the queue
//! behind it never overflows unseen. The counting exporters add the batches an exporter gave
//! up on (`reason=export_failed`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableCounter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use tracewire_core::dropped::{self, Reason, Signal};

/// The SDK's default span queue capacity (`OTEL_BSP_MAX_QUEUE_SIZE`).
const DEFAULT_QUEUE_SIZE: usize = 2048;

/// Spans handed to the queue and not yet delivered, shared by the gate and the exporter
/// behind it.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlight(Arc<InFlightCounts>);

#[derive(Debug, Default)]
struct InFlightCounts {
    /// Handed to the queue, not yet received by the exporter.
    queued: AtomicUsize,
    /// Received by the exporter, export not finished.
    exporting: AtomicUsize,
    /// Set once a shutdown gave up waiting and wrote off everything in flight.
    written_off: AtomicBool,
}

impl InFlight {
    /// Spans waiting in the queue now.
    pub(crate) fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }

    /// Counts every span still queued or being exported as lost at shutdown, once; returns
    /// how many. Exports that finish later change nothing.
    pub(crate) fn write_off(&self) -> u64 {
        if self.0.written_off.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let lost =
            self.0.queued.swap(0, Ordering::AcqRel) + self.0.exporting.swap(0, Ordering::AcqRel);
        dropped::record(Signal::Spans, Reason::Shutdown, lost as u64);
        lost as u64
    }
}

/// A span processor that forwards ended spans to `next` (a queue of `capacity` spans drained
/// by an exporter wrapped in [`CountingSpanExporter`]) and drops and counts the spans that
/// would not fit.
///
/// Composable: it forwards `on_start`, `on_end`, `force_flush`, `shutdown` and `set_resource`
/// to `next`, and any processor that forwards to a next one may sit in front of it.
pub(crate) struct QueueGate<P> {
    next: P,
    capacity: usize,
    in_flight: InFlight,
    shut_down: AtomicBool,
}

impl<P> fmt::Debug for QueueGate<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueGate")
            .field("capacity", &self.capacity)
            .field("queued", &self.in_flight.queued())
            .finish_non_exhaustive()
    }
}

impl<P: SpanProcessor> QueueGate<P> {
    /// Gates `next`, whose queue holds `capacity` spans; `in_flight` is shared with the
    /// [`CountingSpanExporter`] that drains it.
    pub(crate) fn new(next: P, capacity: usize, in_flight: InFlight) -> Self {
        Self {
            next,
            capacity,
            in_flight,
            shut_down: AtomicBool::new(false),
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for QueueGate<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.next.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.shut_down.load(Ordering::Relaxed) {
            dropped::record(Signal::Spans, Reason::Shutdown, 1);
            return;
        }
        // Reserve a place first, so concurrent ends never overshoot the capacity together.
        let queued = &self.in_flight.0.queued;
        if queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            queued.fetch_sub(1, Ordering::AcqRel);
            dropped::record(Signal::Spans, Reason::QueueFull, 1);
            return;
        }
        self.next.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shut_down.store(true, Ordering::Relaxed);
        let result = self.next.shutdown_with_timeout(timeout);
        // Whatever the exporter has not delivered by now will never be sent.
        self.in_flight.write_off();
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}

/// Counts the spans an exporter receives (they left the queue) and those in batches it failed
/// to deliver.
#[derive(Debug)]
pub(crate) struct CountingSpanExporter<E> {
    inner: E,
    in_flight: InFlight,
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let counts = &self.in_flight.0;
        move_count(&counts.queued, &counts.exporting, n);
        let result = self.inner.export(batch).await;
        // After a shutdown that gave up waiting, these spans are already counted as lost.
        if !counts.written_off.load(Ordering::Acquire) {
            take(&counts.exporting, n);
            if result.is_err() {
                dropped::record(Signal::Spans, Reason::ExportFailed, n as u64);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Subtracts `n` from `counter`, never below zero (a write-off may have zeroed it).
fn take(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Moves `n` from `from` to `to`, adding to `to` first so the sum never dips.
fn move_count(from: &AtomicUsize, to: &AtomicUsize, n: usize) {
    to.fetch_add(n, Ordering::AcqRel);
    take(from, n);
}

/// The capacity of the batch span queue: `OTEL_BSP_MAX_QUEUE_SIZE`, else the SDK's default.
fn queue_capacity() -> usize {
    std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_QUEUE_SIZE)
}

/// The SDK's batch span processor exporting through `exporter`, behind a [`QueueGate`] that
/// counts what it drops; its queue holds `capacity` spans (default: `OTEL_BSP_MAX_QUEUE_SIZE`,
/// else 2048). The other `OTEL_BSP_*` variables apply as the SDK reads them.
pub(crate) fn batch_processor<E>(
    exporter: E,
    capacity: Option<usize>,
) -> (QueueGate<BatchSpanProcessor>, InFlight)
where
    E: SpanExporter + Send + 'static,
{
    let capacity = capacity.unwrap_or_else(queue_capacity);
    let in_flight = InFlight::default();
    let exporter = CountingSpanExporter {
        inner: exporter,
        in_flight: in_flight.clone(),
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(capacity)
        .build();
    let batch = BatchSpanProcessor::new(exporter, config);
    (
        QueueGate::new(batch, capacity, in_flight.clone()),
        in_flight,
    )
}

/// Counts the data points of metric exports that failed.
#[derive(Debug)]
pub(crate) struct CountingMetricExporter<E> {
    pub(crate) inner: E,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if result.is_err() {
            dropped::record(Signal::Metrics, Reason::ExportFailed, data_points(metrics));
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Data points in one collection.
fn data_points(metrics: &ResourceMetrics) -> u64 {
    fn count<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(g) => g.data_points().count(),
            MetricData::Sum(s) => s.data_points().count(),
            MetricData::Histogram(h) => h.data_points().count(),
            MetricData::ExponentialHistogram(h) => h.data_points().count(),
        }
    }
    metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .map(|metric| match metric.data() {
            AggregatedMetrics::F64(d) => count(d),
            AggregatedMetrics::U64(d) => count(d),
            AggregatedMetrics::I64(d) => count(d),
        })
        .sum::<usize>() as u64
}

/// Registers `tracewire.telemetry.dropped` on the tracewire meter: one series per signal and
/// reason that has dropped something.
pub(crate) fn instrument() -> ObservableCounter<u64> {
    tracewire_core::metrics::meter()
        .u64_observable_counter(dropped::INSTRUMENT)
        .with_unit("{item}")
        .with_description(
            "Telemetry the pipeline dropped instead of slowing the service, by signal and reason",
        )
        .with_callback(|observer| {
            for (signal, reason, n) in dropped::snapshot() {
                observer.observe(
                    n,
                    &[
                        KeyValue::new("signal", signal.as_str()),
                        KeyValue::new("reason", reason.as_str()),
                    ],
                );
            }
        })
        .build()
}
