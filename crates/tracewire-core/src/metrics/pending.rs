//! Histogram recordings held per thread and handed to the SDK in batches.
//!
//! The SDK's bound histogram takes a mutex and sets a flag on every recording. Under load every
//! worker thread records into the same few bound sets (one per route and status), so each
//! recording pulls the set's cache line from the core that wrote it last: the lock is not held
//! long, but the line travels on every request. Here a thread keeps its recordings in a short
//! buffer of its own and replays them into their handles when it is full, one after the other
//! while the lines stay on its core.
//!
//! Nothing waits on the buffer: the recording thread only ever tries its lock (it is taken
//! from outside only while pending recordings are replayed for a collection), and records
//! directly when it is busy, when the thread is exiting, or when the buffer's lock was
//! poisoned. Every collection replays all threads' buffers first ([`flush_on_collect`]
//! registers that with a meter provider, whose collection runs observable callbacks before it
//! reads any aggregation), and a thread replays its own when it exits, so the exported data
//! is exactly what recording every value directly gives.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::metrics::{BoundHistogram, Meter, ObservableGauge};

/// Recordings a thread holds before it replays them itself.
const CAPACITY: usize = 64;

type Entry = (&'static BoundHistogram<f64>, f64);

/// One thread's pending recordings.
struct Buffer {
    entries: Mutex<Vec<Entry>>,
}

impl Buffer {
    fn replay(entries: &mut Vec<Entry>) {
        for (handle, value) in entries.drain(..) {
            handle.record(value);
        }
    }

    fn replay_all(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Self::replay(&mut entries);
    }
}

/// Every live thread's buffer, for collections to replay.
static BUFFERS: Mutex<Vec<Arc<Buffer>>> = Mutex::new(Vec::new());

/// The calling thread's buffer, registered on its first recording and replayed and removed
/// when the thread exits.
struct Local(Arc<Buffer>);

impl Local {
    fn register() -> Self {
        let buffer = Arc::new(Buffer {
            entries: Mutex::new(Vec::with_capacity(CAPACITY)),
        });
        BUFFERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buffer.clone());
        Self(buffer)
    }

    /// Takes `value` for `handle`; `false` when the buffer is busy (being replayed for a
    /// collection) or poisoned, and the caller should record directly.
    fn push(&self, handle: &'static BoundHistogram<f64>, value: f64) -> bool {
        let Ok(mut entries) = self.0.entries.try_lock() else {
            return false;
        };
        entries.push((handle, value));
        if entries.len() >= CAPACITY {
            Buffer::replay(&mut entries);
        }
        true
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.0.replay_all();
        BUFFERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|buffer| !Arc::ptr_eq(buffer, &self.0));
    }
}

thread_local! {
    static LOCAL: Local = Local::register();
}

/// Records `value` into `handle` through the calling thread's buffer: the SDK sees it at the
/// latest when metrics are next collected (or when the thread exits).
///
/// Only a meter provider that [`flush_on_collect`] was registered with may own `handle`;
/// otherwise its collections could miss values still held by a thread.
pub fn record_deferred(handle: &'static BoundHistogram<f64>, value: f64) {
    let taken = LOCAL
        .try_with(|local| local.push(handle, value))
        .unwrap_or(false);
    if !taken {
        handle.record(value);
    }
}

/// Replays every thread's pending recordings into their handles now.
pub fn flush_pending() {
    // The list is copied so no thread waits on it while the buffers are replayed.
    let buffers: Vec<Arc<Buffer>> = BUFFERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for buffer in buffers {
        buffer.replay_all();
    }
}

/// Makes every collection of `meter`'s provider replay the pending recordings first, through
/// an observable gauge that observes nothing (and so is never exported). Call it for each
/// provider whose bound histograms go through [`record_deferred`] (every server layer calls it
/// for its own: a second registration on one provider finds the buffers already replayed); the
/// returned instrument need not be kept.
pub fn flush_on_collect(meter: &Meter) -> ObservableGauge<u64> {
    meter
        .u64_observable_gauge("tracewire.metrics.pending")
        .with_description("Replays recordings held per thread before every collection.")
        .with_callback(|_| flush_pending())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use std::sync::Barrier;

    /// (count, sum, min, max, bucket counts) of the one data point of histogram `name` in the
    /// last export.
    type Point = (u64, f64, Option<f64>, Option<f64>, Vec<u64>);

    fn last_point(exporter: &InMemoryMetricExporter, name: &str) -> Option<Point> {
        let exports = exporter.get_finished_metrics().unwrap();
        let rm = exports.last()?;
        let metric = rm
            .scope_metrics()
            .flat_map(|sm| sm.metrics())
            .find(|m| m.name() == name)?;
        let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
            panic!("{name} is not an f64 histogram");
        };
        let points: Vec<_> = h.data_points().collect();
        assert_eq!(points.len(), 1, "one attribute set");
        let p = points[0];
        Some((
            p.count(),
            p.sum(),
            p.min(),
            p.max(),
            p.bucket_counts().collect(),
        ))
    }

    /// The same point, the sums equal but for the order of the additions.
    fn assert_same(deferred: Point, direct: &Point) {
        let (sum, direct_sum) = (deferred.1, direct.1);
        assert!(
            (sum - direct_sum).abs() <= direct_sum.abs() * 1e-12,
            "{deferred:?} {direct:?}"
        );
        assert_eq!(
            (deferred.0, deferred.2, deferred.3, &deferred.4),
            (direct.0, direct.2, direct.3, &direct.4)
        );
    }

    /// A value of round `round` on thread `thread`, spread over every bucket, some equal to a
    /// boundary, and the SDK's ignored non-finite values among them.
    fn value(thread: usize, round: usize) -> f64 {
        match (thread * 131 + round * 17) % 23 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => 0.25,
            3 => 10.0,
            n => {
                // Below, at and above each boundary.
                let bounds = crate::metrics::DURATION_BOUNDARIES_SECONDS;
                bounds[(n + round) % bounds.len()] * [0.5, 1.0, 1.5][(n + thread) % 3]
            }
        }
    }

    /// A provider exporting into memory, its collections replaying the buffers.
    fn provider() -> (InMemoryMetricExporter, SdkMeterProvider, Meter) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let meter = provider.meter("t");
        flush_on_collect(&meter);
        (exporter, provider, meter)
    }

    #[test]
    fn deferred_recordings_export_exactly_what_direct_ones_do() {
        let (exporter, provider, meter) = provider();
        let deferred = crate::metrics::duration_histogram(&meter, "t.deferred", "T");
        let direct = crate::metrics::duration_histogram(&meter, "t.direct", "T");
        let set = [KeyValue::new("route", "/users/{id}")];
        let handle: &'static BoundHistogram<f64> = Box::leak(Box::new(deferred.bind(&set)));

        const THREADS: usize = 4;
        // Fewer than a buffer holds, then many more: some recordings still pending in a live
        // thread when the first collection runs, most replayed by full buffers, the rest when
        // the threads exit.
        const FIRST: usize = CAPACITY / 2;
        const SECOND: usize = CAPACITY * 5 + 3;
        let recorded = Barrier::new(THREADS + 1);
        let collected = Barrier::new(THREADS + 1);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (recorded, collected, direct, set) = (&recorded, &collected, &direct, &set);
                scope.spawn(move || {
                    for round in 0..FIRST {
                        record_deferred(handle, value(thread, round));
                        direct.record(value(thread, round), set);
                    }
                    recorded.wait();
                    collected.wait();
                    for round in FIRST..FIRST + SECOND {
                        record_deferred(handle, value(thread, round));
                        direct.record(value(thread, round), set);
                    }
                });
            }
            recorded.wait();
            // Every thread is alive and holds its first recordings.
            provider.force_flush().unwrap();
            let first = last_point(&exporter, "t.direct").unwrap();
            assert_same(last_point(&exporter, "t.deferred").unwrap(), &first);
            let finite = (0..THREADS)
                .flat_map(|t| (0..FIRST).map(move |r| value(t, r)))
                .filter(|v| v.is_finite())
                .count();
            assert_eq!(first.0, finite as u64);
            collected.wait();
        });
        // The threads have exited.
        provider.force_flush().unwrap();
        let all = last_point(&exporter, "t.direct").unwrap();
        assert_same(last_point(&exporter, "t.deferred").unwrap(), &all);
        let finite = (0..THREADS)
            .flat_map(|t| (0..FIRST + SECOND).map(move |r| value(t, r)))
            .filter(|v| v.is_finite())
            .count();
        assert_eq!(all.0, finite as u64);
        assert!(all.4.iter().all(|&n| n > 0), "every bucket: {:?}", all.4);
    }

    #[test]
    fn a_thread_whose_buffer_is_being_replayed_records_directly() {
        let (exporter, provider, meter) = provider();
        let histogram = crate::metrics::duration_histogram(&meter, "t.busy", "T");
        let handle: &'static BoundHistogram<f64> = Box::leak(Box::new(histogram.bind(&[])));
        record_deferred(handle, 1.0);
        // What a collection does to this thread's buffer while the thread records.
        LOCAL.with(|local| {
            let held = local.0.entries.lock().unwrap();
            record_deferred(handle, 2.0);
            assert_eq!(
                held.len(),
                1,
                "the second value did not wait for the buffer"
            );
        });
        provider.force_flush().unwrap();
        let point = last_point(&exporter, "t.busy").unwrap();
        assert_eq!((point.0, point.1), (2, 3.0));
    }
}
