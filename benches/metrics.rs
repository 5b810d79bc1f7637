//! Recording a duration into a bound histogram, as every request of a route and every call of a
//! `#[traced]` function does: through the SDK's bound handle directly (its peer) and through
//! tracewire's per-thread buffer (`tracewire_core::metrics::record_deferred`), on one thread and
//! on two threads recording the same attribute set at once, as two workers serving one route
//! do. Between two recordings each thread does some work of its own (about what a small
//! request costs a server besides its telemetry, touching no shared memory), as a worker does
//! between two requests; `work_only` is that work alone. Each figure is the time of one
//! recording and its work on one thread: a variant's cost is its figure minus `work_only`'s.
//!
//! ```sh
//! cargo bench -p tracewire-benches --bench metrics
//! ```

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundHistogram, MeterProvider as _};
use tracewire_core::metrics::{duration_histogram, flush_on_collect, record_deferred};

/// A value in the 5–10 ms bucket, moved a little each call so it is not a constant.
fn value(i: u64) -> f64 {
    0.007 + (i % 7) as f64 * 1e-5
}

/// Work of the calling thread alone: a xorshift chain the compiler cannot skip.
fn work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..WORK_ROUNDS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

const WORK_ROUNDS: u32 = 300;

/// `iters` recordings on each of `threads` threads at once, each after its work; the slowest
/// thread's time.
fn run(threads: usize, iters: u64, record: impl Fn(f64) + Sync) -> Duration {
    tracewire_benches::slowest_thread(threads, || {
        let start = Instant::now();
        for i in 0..iters {
            std::hint::black_box(work(std::hint::black_box(i)));
            record(std::hint::black_box(value(i)));
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    // Collected once an hour, as a service's provider between two exports.
    let provider = tracewire_benches::idle_meter_provider();
    let meter = provider.meter("bench");
    flush_on_collect(&meter);
    let histogram = duration_histogram(&meter, "bench.duration", "Bench");
    let set = [
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("http.route", "/users/{id}"),
        KeyValue::new("http.response.status_code", 200),
    ];
    let handle: &'static BoundHistogram<f64> = Box::leak(Box::new(histogram.bind(&set)));

    let mut group = c.benchmark_group("histogram_record");
    for threads in [1, 2] {
        group.bench_function(format!("work_only_{threads}_thread"), |b| {
            b.iter_custom(|iters| run(threads, iters, |_| {}))
        });
        group.bench_function(format!("sdk_bound_{threads}_thread"), |b| {
            b.iter_custom(|iters| run(threads, iters, |v| handle.record(v)))
        });
        group.bench_function(format!("deferred_{threads}_thread"), |b| {
            b.iter_custom(|iters| run(threads, iters, |v| record_deferred(handle, v)))
        });
    }
    group.finish();
    provider.force_flush().expect("flush");
}

criterion_group!(benches, bench);
criterion_main!(benches);
