//! The tracewire meter and helpers to build instruments the same way in every crate.
//!
//! Instruments are built once (when a layer, wrapper or `#[traced]` call site is first used)
//! and recorded many times; never build them per request. Attribute sets that repeat (one per
//! route, function or destination and status) are bound once ([`BoundHistograms`]) so a
//! recording does no attribute hashing.
//!
//! What every worker thread updates on every request or call is kept off shared cache lines:
//! bound recordings that live as long as the process go through a buffer of the calling thread
//! ([`record_deferred`], replayed before every collection), and counts are split per thread
//! ([`StripedCount`]).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundHistogram, Histogram, Meter};

mod pending;

pub use pending::{flush_on_collect, flush_pending, record_deferred};

/// Bucket boundaries (seconds) the semantic conventions recommend for `*.duration` histograms.
/// The SDK's default boundaries are millisecond-scaled, so every duration histogram sets these.
pub const DURATION_BOUNDARIES_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The tracewire meter, from the global meter provider at the time of the call.
pub fn meter() -> Meter {
    opentelemetry::global::meter_with_scope(crate::scope())
}

/// A histogram of durations in seconds (`unit = "s"`) with the semantic-convention buckets.
pub fn duration_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BOUNDARIES_SECONDS.to_vec())
        .build()
}

/// FNV-1a, the hasher of tracewire's small caches keyed by text its own code produces (route
/// templates, span names, status codes, error types), never text a client chose: the flooding
/// that std's keyed SipHash guards against cannot happen there, the maps are bounded anyway,
/// and a short key hashes in a fraction of SipHash's cost.
///
/// ```
/// use std::collections::HashMap;
/// use std::hash::BuildHasherDefault;
/// use tracewire_core::metrics::Fnv;
///
/// let mut routes: HashMap<&str, u32, BuildHasherDefault<Fnv>> = HashMap::default();
/// routes.insert("/users/{id}", 1);
/// assert_eq!(routes["/users/{id}"], 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A count that threads update at once without passing one cache line back and forth: it is
/// split over [`STRIPES`](Self::STRIPES) cache lines, each thread adding to one of its own
/// (threads take them in turn as they first count), and summed when read. An update made on
/// one thread and undone on another leaves one stripe up and another down: the sum is right.
///
/// ```
/// use tracewire_core::metrics::StripedCount;
///
/// static IN_FLIGHT: StripedCount = StripedCount::new();
/// IN_FLIGHT.add(1);
/// std::thread::spawn(|| IN_FLIGHT.add(-1)).join().unwrap();
/// IN_FLIGHT.add(1);
/// assert_eq!(IN_FLIGHT.sum(), 1);
/// ```
pub struct StripedCount {
    stripes: [Stripe; STRIPES],
}

const STRIPES: usize = 4;

/// One stripe of a count, alone on its cache line.
#[repr(align(64))]
struct Stripe(AtomicI64);

impl StripedCount {
    /// How many cache lines a count is split over.
    pub const STRIPES: usize = STRIPES;

    /// A count at zero.
    pub const fn new() -> Self {
        Self {
            stripes: [const { Stripe(AtomicI64::new(0)) }; STRIPES],
        }
    }

    /// Adds `n` (negative to take away) on the calling thread's stripe.
    pub fn add(&self, n: i64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count: every stripe added up.
    pub fn sum(&self) -> i64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl Default for StripedCount {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StripedCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StripedCount").field(&self.sum()).finish()
    }
}

/// The stripe of the calling thread: threads take stripes in turn as they first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|stripe| {
            if stripe.get() == usize::MAX {
                stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
            }
            stripe.get()
        })
        .unwrap_or(0)
}

/// A duration histogram bound to a few attribute sets, each bound on first use.
///
/// Recording through an unbound OpenTelemetry instrument hashes the attribute slice and looks
/// it up in the SDK's map on every call. Operations of one route, function or destination see
/// only a handful of attribute sets (one per status class, scheme and error type), so each is
/// bound once with [`Histogram::bind`] and later calls only find their handle by a key
/// comparison and record without any attribute work.
///
/// The handles sit in slots written once, in order: finding one is a short linear scan of
/// plain reads, with no lock and no shared counter to update, so worker threads recording
/// the same route do not contend on it (only binding a new set takes a lock). Past
/// [`LIMIT`](Self::LIMIT) sets, further ones are recorded unbound, exactly as before: the
/// exported data is the same either way.
///
/// ```
/// use opentelemetry::KeyValue;
/// use tracewire_core::metrics::{BoundHistograms, duration_histogram, meter};
///
/// let histogram = duration_histogram(&meter(), "demo.duration", "Demo");
/// let bound: BoundHistograms<u16> = BoundHistograms::new(histogram);
/// let status = 200;
/// bound.record(0.012, |key| *key == status, || {
///     (status, vec![KeyValue::new("http.response.status_code", i64::from(status))])
/// });
/// ```
pub struct BoundHistograms<K> {
    histogram: Histogram<f64>,
    /// Filled from the front; a slot once set never changes.
    slots: [OnceLock<(K, BoundHistogram<f64>)>; BOUND_LIMIT],
    /// Held while a set is bound, so two threads never bind into the same slot.
    binding: Mutex<()>,
}

const BOUND_LIMIT: usize = 32;

impl<K> fmt::Debug for BoundHistograms<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundHistograms")
            .field("bound", &self.bound().count())
            .finish_non_exhaustive()
    }
}

impl<K> BoundHistograms<K> {
    /// How many attribute sets are bound at most; further ones are recorded unbound.
    pub const LIMIT: usize = BOUND_LIMIT;

    /// Binds attribute sets of `histogram` as they are first recorded.
    pub fn new(histogram: Histogram<f64>) -> Self {
        Self {
            histogram,
            slots: [const { OnceLock::new() }; BOUND_LIMIT],
            binding: Mutex::new(()),
        }
    }

    /// The sets bound so far, in the order they were bound.
    fn bound(&self) -> impl Iterator<Item = &(K, BoundHistogram<f64>)> {
        self.slots.iter().map_while(OnceLock::get)
    }

    /// Records `value` under the attribute set whose key `matches`; `attributes` builds the key
    /// and the set the first time (and every time once [`LIMIT`](Self::LIMIT) sets are bound).
    pub fn record(
        &self,
        value: f64,
        matches: impl Fn(&K) -> bool,
        attributes: impl FnOnce() -> (K, Vec<KeyValue>),
    ) {
        match self.bound().find(|(key, _)| matches(key)) {
            Some((_, handle)) => handle.record(value),
            None => self.bind_and_record(value, matches, attributes),
        }
    }

    /// [`record`](Self::record) for a set of histograms that lives as long as the process
    /// (a route's, leaked with its names): a bound set's recording goes through the calling
    /// thread's buffer ([`record_deferred`]), so threads recording the same set do not pass
    /// its cache line back and forth. The histogram's meter provider must have
    /// [`flush_on_collect`] registered.
    pub fn record_deferred(
        &'static self,
        value: f64,
        matches: impl Fn(&K) -> bool,
        attributes: impl FnOnce() -> (K, Vec<KeyValue>),
    ) {
        match self.bound().find(|(key, _)| matches(key)) {
            Some((_, handle)) => record_deferred(handle, value),
            None => self.bind_and_record(value, matches, attributes),
        }
    }

    #[cold]
    fn bind_and_record(
        &self,
        value: f64,
        matches: impl Fn(&K) -> bool,
        attributes: impl FnOnce() -> (K, Vec<KeyValue>),
    ) {
        let (key, attributes) = attributes();
        let _binding = self.binding.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have bound it meanwhile.
        if let Some((_, handle)) = self.bound().find(|(key, _)| matches(key)) {
            handle.record(value);
            return;
        }
        let Some(free) = self.slots.iter().find(|slot| slot.get().is_none()) else {
            self.histogram.record(value, &attributes);
            return;
        };
        let handle = self.histogram.bind(&attributes);
        handle.record(value);
        // Free and the lock held: this sets it.
        let _ = free.set((key, handle));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    /// (attributes as `key=value` sorted, count, sum) of every data point of `name`.
    fn points(exporter: &InMemoryMetricExporter, name: &str) -> Vec<(Vec<String>, u64, f64)> {
        let mut out = Vec::new();
        for rm in exporter.get_finished_metrics().unwrap() {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() else {
                        panic!("{name} is not an f64 histogram");
                    };
                    for p in h.data_points() {
                        let mut attrs: Vec<String> = p
                            .attributes()
                            .map(|kv| format!("{}={}", kv.key, kv.value))
                            .collect();
                        attrs.sort();
                        out.push((attrs, p.count(), p.sum()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A meter provider exporting into memory, flushed by `force_flush`.
    fn in_memory() -> (InMemoryMetricExporter, SdkMeterProvider) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        (exporter, provider)
    }

    #[test]
    fn threads_binding_at_once_bind_each_set_once_and_lose_nothing() {
        let (exporter, provider) = in_memory();
        let histogram = duration_histogram(&provider.meter("t"), "t.concurrent", "T");
        let bound: BoundHistograms<u16> = BoundHistograms::new(histogram);
        let sets = BoundHistograms::<u16>::LIMIT as u16 + 8;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for round in 0..50 {
                        for status in 0..sets {
                            bound.record(
                                f64::from(round),
                                |key| *key == status,
                                || (status, vec![KeyValue::new("status", i64::from(status))]),
                            );
                        }
                    }
                });
            }
        });
        provider.force_flush().unwrap();
        let points = points(&exporter, "t.concurrent");
        // One data point a set, bound or not, with every recording of all four threads.
        assert_eq!(points.len(), usize::from(sets));
        assert!(points.iter().all(|(_, count, _)| *count == 200));
        assert_eq!(bound.bound().count(), BoundHistograms::<u16>::LIMIT);
        let mut keys: Vec<u16> = bound.bound().map(|(key, _)| *key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys.len(),
            BoundHistograms::<u16>::LIMIT,
            "no set bound twice"
        );
    }

    #[test]
    fn bound_and_unbound_sets_export_alike() {
        let (exporter, provider) = in_memory();
        let histogram = duration_histogram(&provider.meter("t"), "t.duration", "T");
        let bound: BoundHistograms<u16> = BoundHistograms::new(histogram.clone());
        let record = |status: u16, value: f64| {
            bound.record(
                value,
                |key| *key == status,
                || (status, vec![KeyValue::new("status", i64::from(status))]),
            );
        };
        record(200, 1.0);
        record(200, 2.0);
        record(500, 4.0);
        // The same set recorded unbound lands in the same data point.
        histogram.record(8.0, &[KeyValue::new("status", 200)]);
        // Past the limit, sets are recorded unbound: nothing is lost.
        let past_limit = 1000 + BoundHistograms::<u16>::LIMIT as u16;
        for status in 1000..=past_limit {
            record(status, 1.0);
        }
        record(past_limit, 1.0);
        provider.force_flush().unwrap();

        let points = points(&exporter, "t.duration");
        assert_eq!(points.len(), 2 + BoundHistograms::<u16>::LIMIT + 1);
        let find = |status: &str| {
            points
                .iter()
                .find(|(attrs, _, _)| attrs == &[format!("status={status}")])
                .map(|(_, count, sum)| (*count, *sum))
        };
        assert_eq!(find("200"), Some((3, 11.0)));
        assert_eq!(find("500"), Some((1, 4.0)));
        assert_eq!(find("1000"), Some((1, 1.0)));
        assert_eq!(find(&past_limit.to_string()), Some((2, 2.0)));
        let bound_sets = bound.bound().count();
        assert_eq!(bound_sets, BoundHistograms::<u16>::LIMIT);
    }
}
