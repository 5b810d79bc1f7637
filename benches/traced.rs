//! Added cost of instrumenting one call of an empty async function, in one run: bare;
//! `#[traced]` sampled, unsampled at the root, inside an unsampled trace (with and without
//! its metrics) and inside a sampled one; `#[tracing::instrument]`
//! exporting through tracing-opentelemetry; fastrace's `#[trace]` with its reporter.
//!
//! The OpenTelemetry variants export through a batch span processor into an exporter that
//! discards the spans, so the figures include span creation, context handling, metrics and the
//! hand-off to the exporter, but no I/O. Spans are root spans (no current parent) except in
//! the variants named "in … trace", which run under a remote parent.
//! fastrace only records `#[trace]` under a parent, so its variant opens a root span per call
//! as well (two spans per call: compare with care).
//!
//! The peer: `hand_written_sampled` and `hand_written_in_sampled_trace`, the same span,
//! attributes, context and metrics written by hand on the SDK ([`hand_written`]).
//!
//! Two floors: the SDK alone starting and ending one span around the same call
//! (`sdk_span_sampled_floor` at the root, `sdk_span_in_sampled_trace_floor` under the sampled
//! remote parent), on the same providers: no attributes, no context attached, no metrics. What
//! any instrumentation built on the SDK's spans pays at least.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler;
use tracewire_benches::provider;
use tracing_subscriber::layer::SubscriberExt;

/// Discards fastrace's span records.
struct DiscardRecords;

impl fastrace::collector::Reporter for DiscardRecords {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        std::hint::black_box(spans);
    }
}

#[inline(never)]
async fn bare(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced]
async fn traced_sampled(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced]
async fn traced_unsampled(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced(metrics = false)]
async fn traced_sampled_no_metrics(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced(metrics = false)]
async fn traced_unsampled_no_metrics(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced(metrics = false)]
async fn traced_in_unsampled_trace(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced]
async fn traced_in_unsampled_trace_metrics(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[tracewire_macros::traced]
async fn traced_in_sampled_trace(x: u64) -> u64 {
    std::hint::black_box(x)
}

fn unsampled_parent() -> opentelemetry::Context {
    remote_parent(opentelemetry::trace::TraceFlags::default())
}

fn sampled_parent() -> opentelemetry::Context {
    remote_parent(opentelemetry::trace::TraceFlags::SAMPLED)
}

fn remote_parent(flags: opentelemetry::trace::TraceFlags) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId, TraceState};
    let sc = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        flags,
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

/// What `#[traced]` records, written by hand on the SDK the way its documentation shows: a span
/// with the two code attributes started in the current context, the context attached on every
/// poll (`FutureExt::with_context`), the duration histogram and the calls counter recorded with
/// their attribute slices, the span ended with the clock reading the duration ends with. No
/// in-flight count, no panic or cancellation handling.
async fn hand_written<F: std::future::Future>(peer: &HandWritten, body: F) -> F::Output {
    use opentelemetry::trace::{FutureExt as _, SpanKind, TraceContextExt as _, Tracer as _};
    use opentelemetry::{Context, KeyValue};
    let start = std::time::SystemTime::now();
    let span = peer
        .tracer
        .span_builder("hand_written")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("code.function.name", "traced::hand_written"),
            KeyValue::new("code.namespace", "traced"),
        ])
        .start(&peer.tracer);
    let cx = Context::current_with_span(span);
    let out = body.with_context(cx.clone()).await;
    let end = std::time::SystemTime::now();
    let elapsed = end.duration_since(start).unwrap_or_default();
    peer.duration
        .record(elapsed.as_secs_f64(), &peer.attributes[..2]);
    peer.calls.add(1, &peer.attributes);
    cx.span().end_with_timestamp(end);
    out
}

/// The tracer and instruments of [`hand_written`], built once.
struct HandWritten {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    duration: opentelemetry::metrics::Histogram<f64>,
    calls: opentelemetry::metrics::Counter<u64>,
    attributes: [opentelemetry::KeyValue; 3],
}

impl HandWritten {
    fn new(provider: &opentelemetry_sdk::trace::SdkTracerProvider) -> Self {
        use opentelemetry::KeyValue;
        let meter = global::meter("hand_written");
        Self {
            tracer: provider.tracer("hand_written"),
            duration: meter.f64_histogram("hand_written.duration").build(),
            calls: meter.u64_counter("hand_written.calls").build(),
            attributes: [
                KeyValue::new("function", "hand_written"),
                KeyValue::new("module", "traced"),
                KeyValue::new("result", "ok"),
            ],
        }
    }
}

#[tracing::instrument]
async fn instrumented(x: u64) -> u64 {
    std::hint::black_box(x)
}

#[fastrace::trace]
async fn fastrace_traced(x: u64) -> u64 {
    std::hint::black_box(x)
}

/// `iters` calls of `call` on each of two threads at once, each thread in the context `parent`
/// gives; the slower thread's time.
fn on_two_threads<F: std::future::Future>(
    iters: u64,
    parent: fn() -> opentelemetry::Context,
    call: impl Fn() -> F + Sync,
) -> std::time::Duration {
    tracewire_benches::slowest_thread(2, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _parent = parent().attach();
        rt.block_on(async {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                std::hint::black_box(call().await);
            }
            start.elapsed()
        })
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let meter_provider = tracewire_benches::idle_meter_provider();
    global::set_meter_provider(meter_provider.clone());

    // Each `#[traced]` call site binds its tracer on its first call: bind the sampled ones
    // under the sampled provider, then the unsampled ones under the unsampled provider.
    let sampled = provider(Sampler::AlwaysOn);
    let unsampled = provider(Sampler::AlwaysOff);
    tracewire_core::provider::set_tracer_provider(sampled.clone());
    rt.block_on(async {
        traced_sampled(0).await;
        traced_sampled_no_metrics(0).await;
    });
    tracewire_core::provider::set_tracer_provider(unsampled.clone());
    rt.block_on(async {
        traced_unsampled(0).await;
        traced_unsampled_no_metrics(0).await;
    });
    let parent_based = provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    tracewire_core::provider::set_tracer_provider(parent_based.clone());
    rt.block_on(async {
        traced_in_unsampled_trace(0).await;
        traced_in_unsampled_trace_metrics(0).await;
        traced_in_sampled_trace(0).await;
    });

    fastrace::set_reporter(DiscardRecords, fastrace::collector::Config::default());

    let mut group = c.benchmark_group("traced_empty_async_fn");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| bare(std::hint::black_box(1)))
    });
    group.bench_function("tracewire_sampled", |b| {
        b.to_async(&rt)
            .iter(|| traced_sampled(std::hint::black_box(1)))
    });
    group.bench_function("tracewire_sampled_no_metrics", |b| {
        b.to_async(&rt)
            .iter(|| traced_sampled_no_metrics(std::hint::black_box(1)))
    });
    group.bench_function("tracewire_unsampled", |b| {
        b.to_async(&rt)
            .iter(|| traced_unsampled(std::hint::black_box(1)))
    });
    group.bench_function("tracewire_unsampled_no_metrics", |b| {
        b.to_async(&rt)
            .iter(|| traced_unsampled_no_metrics(std::hint::black_box(1)))
    });
    {
        // Inside an unsampled trace (parent-based sampler, `traceparent` flags 00), with the
        // parent-based shortcut on: no span is started.
        tracewire_core::traced::set_skip_unsampled_children(true);
        let _parent = unsampled_parent().attach();
        group.bench_function("tracewire_in_unsampled_trace", |b| {
            b.to_async(&rt)
                .iter(|| traced_in_unsampled_trace(std::hint::black_box(1)))
        });
        group.bench_function("tracewire_in_unsampled_trace_metrics", |b| {
            b.to_async(&rt)
                .iter(|| traced_in_unsampled_trace_metrics(std::hint::black_box(1)))
        });
        // The same on two threads at once, as two workers calling one function: one call's
        // time on one thread. What the threads share is the call site's counts and histogram.
        group.bench_function("tracewire_in_unsampled_trace_metrics_2_threads", |b| {
            b.iter_custom(|iters| {
                on_two_threads(iters, unsampled_parent, || {
                    traced_in_unsampled_trace_metrics(std::hint::black_box(1))
                })
            })
        });
        tracewire_core::traced::set_skip_unsampled_children(false);
    }
    {
        // Inside a sampled trace, the sampler known to be parent-based: a recording child
        // span, as a call made while serving a sampled request.
        tracewire_core::traced::set_skip_unsampled_children(true);
        let _parent = sampled_parent().attach();
        group.bench_function("tracewire_in_sampled_trace", |b| {
            b.to_async(&rt)
                .iter(|| traced_in_sampled_trace(std::hint::black_box(1)))
        });
        tracewire_core::traced::set_skip_unsampled_children(false);
    }
    {
        use opentelemetry::trace::{Span as _, Tracer as _};
        let root_tracer = sampled.tracer("floor");
        group.bench_function("sdk_span_sampled_floor", |b| {
            b.to_async(&rt).iter(|| async {
                let mut span = root_tracer.start("sdk_span_sampled_floor");
                let out = bare(std::hint::black_box(1)).await;
                span.end();
                out
            })
        });
        // The same span with the two code attributes `#[traced]` records: the attribute
        // vector is allocated on this thread and freed on the export thread.
        group.bench_function("sdk_span_code_attributes_floor", |b| {
            b.to_async(&rt).iter(|| async {
                use opentelemetry::KeyValue;
                let mut span = root_tracer
                    .span_builder("sdk_span_code_attributes_floor")
                    .with_attributes([
                        KeyValue::new("code.function.name", "traced::floor"),
                        KeyValue::new("code.namespace", "traced"),
                    ])
                    .start(&root_tracer);
                let out = bare(std::hint::black_box(1)).await;
                span.end();
                out
            })
        });
        let child_tracer = parent_based.tracer("floor");
        let parent = sampled_parent();
        group.bench_function("sdk_span_in_sampled_trace_floor", |b| {
            b.to_async(&rt).iter(|| async {
                let mut span = child_tracer.start_with_context("sdk_span_floor", &parent);
                let out = bare(std::hint::black_box(1)).await;
                span.end();
                out
            })
        });
    }
    {
        // The peer: the same behaviours written by hand on the SDK, on the same providers.
        let root = HandWritten::new(&sampled);
        group.bench_function("hand_written_sampled", |b| {
            b.to_async(&rt)
                .iter(|| hand_written(&root, bare(std::hint::black_box(1))))
        });
        let child = HandWritten::new(&parent_based);
        let _parent = sampled_parent().attach();
        group.bench_function("hand_written_in_sampled_trace", |b| {
            b.to_async(&rt)
                .iter(|| hand_written(&child, bare(std::hint::black_box(1))))
        });
    }
    {
        let layer = tracing_opentelemetry::layer().with_tracer(sampled.tracer("bench"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("tracing_instrument_otel_sampled", |b| {
            b.to_async(&rt)
                .iter(|| instrumented(std::hint::black_box(1)))
        });
    }
    {
        let layer = tracing_opentelemetry::layer().with_tracer(unsampled.tracer("bench"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("tracing_instrument_otel_unsampled", |b| {
            b.to_async(&rt)
                .iter(|| instrumented(std::hint::black_box(1)))
        });
    }
    group.bench_function("fastrace_root_and_trace", |b| {
        b.to_async(&rt).iter(|| async {
            let root = fastrace::Span::root("call", fastrace::collector::SpanContext::random());
            let _parent = root.set_local_parent();
            fastrace_traced(std::hint::black_box(1)).await
        })
    });
    group.bench_function("fastrace_root_only", |b| {
        b.to_async(&rt).iter(|| async {
            let root = fastrace::Span::root("call", fastrace::collector::SpanContext::random());
            let _parent = root.set_local_parent();
            bare(std::hint::black_box(1)).await
        })
    });
    group.finish();
    fastrace::flush();
    let _ = sampled.shutdown();
    let _ = unsampled.shutdown();
    let _ = parent_based.shutdown();
    let _ = meter_provider.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
