//! Cost of one `#[tracing::instrument]` call of an empty async function turned into an
//! OpenTelemetry span, in one run: no subscriber layer at all (bare `tracing`), tracewire's
//! `TracingBridge`, and the peer, tracing-opentelemetry; each sampled and unsampled.
//!
//! Both export through a batch span processor into an exporter that discards the spans, so the
//! figures include span creation, field recording, context attach/detach on enter/exit and the
//! hand-off to the exporter, but no I/O. Every span is a root span. The machine running the
//! benches is shared: compare the ratios of one run, not absolute times across runs.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler;
use tracewire_benches::provider;
use tracewire_core::bridge::TracingBridge;
use tracing_subscriber::layer::SubscriberExt;

#[tracing::instrument]
async fn instrumented(x: u64) -> u64 {
    std::hint::black_box(x)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sampled = provider(Sampler::AlwaysOn);
    let unsampled = provider(Sampler::AlwaysOff);

    let mut group = c.benchmark_group("tracing_instrument_empty_async_fn");
    {
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
        group.bench_function("registry_only", |b| {
            b.to_async(&rt)
                .iter(|| instrumented(std::hint::black_box(1)))
        });
    }
    for (name, provider) in [("sampled", &sampled), ("unsampled", &unsampled)] {
        {
            let bridge =
                TracingBridge::with_tracer(BoxedTracer::new(Box::new(provider.tracer("bench"))));
            let _default =
                tracing::subscriber::set_default(tracing_subscriber::registry().with(bridge));
            group.bench_function(format!("tracewire_bridge_{name}"), |b| {
                b.to_async(&rt)
                    .iter(|| instrumented(std::hint::black_box(1)))
            });
        }
        {
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
            let _default =
                tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
            group.bench_function(format!("tracing_opentelemetry_{name}"), |b| {
                b.to_async(&rt)
                    .iter(|| instrumented(std::hint::black_box(1)))
            });
        }
    }
    group.finish();
    let _ = sampled.shutdown();
    let _ = unsampled.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
