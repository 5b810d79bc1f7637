//! Benchmarks live beside this crate: see `benches/*.rs`. What they share is here: a span
//! exporter that discards, providers built on it, a meter provider that never exports while
//! a bench runs, a way to run one measurement on several threads at once, and the naive
//! hand-written OpenTelemetry layer every server figure is compared with ([`naive`]).

pub mod naive;

use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};

/// Accepts and discards every batch, like a collector that answers instantly.
#[derive(Debug)]
pub struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// A tracer provider with `sampler`, exporting in batches to [`Discard`].
pub fn provider(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .with_sampler(sampler)
        .build()
}

/// A meter provider whose reader collects once an hour: instruments record as in a service,
/// and no export runs during a measurement.
pub fn idle_meter_provider() -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(InMemoryMetricExporter::default())
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build()
}

/// Runs `measure` on `threads` threads at once and returns the slowest thread's time: for
/// `iter_custom` benches of what threads contend on.
pub fn slowest_thread(threads: usize, measure: impl Fn() -> Duration + Sync) -> Duration {
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads).map(|_| scope.spawn(&measure)).collect();
        running
            .into_iter()
            .map(|thread| thread.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}
