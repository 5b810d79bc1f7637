//! Per-request cost of the tail decision, requests without an incoming `traceparent` driven
//! through an axum router with `ServerLayer` in-process (no sockets): the plain sampled and
//! unsampled SDK paths against tracewire's consistent sampler with the tail processor (ratio
//! 1: every trace kept at the head, exemplars written; ratio 0: every span recorded, buffered
//! and dropped at the end; ratio 0 with a failing request: buffered, kept, exemplars written).
//! Every variant exports through a batch processor into an exporter that discards the spans.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::global;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use tower::ServiceExt;
use tracewire::sampling::{ConsistentSampler, TailProcessor};

/// Accepts and discards every batch, like a collector that answers instantly.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

fn plain(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .with_sampler(sampler)
        .build()
}

fn tail(ratio: f64) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(ConsistentSampler::new(ratio, Vec::new(), true))
        .with_span_processor(TailProcessor::new(
            BatchSpanProcessor::builder(Discard).build(),
            Duration::from_secs(1),
        ))
        .build()
}

async fn user(axum::extract::Path(id): axum::extract::Path<u64>) -> String {
    format!("{{\"id\":{id}}}")
}

async fn fail() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

/// A router instrumented with the tracer provider `provider` (set globally while building).
fn app(provider: &SdkTracerProvider) -> Router {
    // As `tracewire::init()` installs it.
    tracewire_core::provider::set_tracer_provider(provider.clone());
    Router::new()
        .route("/users/{id}", get(user))
        .route("/fail", get(fail))
        .layer(tracewire::http::ServerLayer::new())
}

async fn drive(app: &Router, path: &'static str) {
    let req = Request::get(path)
        .header("user-agent", "bench/1.0")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap();
    std::hint::black_box(body);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    global::set_text_map_propagator(TraceContextPropagator::new());
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(
            opentelemetry_sdk::metrics::PeriodicReader::builder(
                opentelemetry_sdk::metrics::InMemoryMetricExporter::default(),
            )
            .with_interval(Duration::from_secs(3600))
            .build(),
        )
        .build();
    global::set_meter_provider(meter_provider);

    let providers = [
        ("plain_sampled", plain(Sampler::AlwaysOn)),
        ("plain_unsampled", plain(Sampler::AlwaysOff)),
        ("tail_ratio_1_kept_at_head", tail(1.0)),
        ("tail_ratio_0_dropped", tail(0.0)),
    ];
    let apps: Vec<(&str, Router)> = providers.iter().map(|(n, p)| (*n, app(p))).collect();
    let tail_failing = tail(0.0);
    let failing = app(&tail_failing);
    let plain_failing_provider = plain(Sampler::AlwaysOn);
    let plain_failing = app(&plain_failing_provider);

    let mut group = c.benchmark_group("sampling_request");
    for (name, app) in &apps {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| drive(app, "/users/7"));
        });
    }
    group.bench_function("plain_sampled_failing", |b| {
        b.to_async(&rt).iter(|| drive(&plain_failing, "/fail"));
    });
    group.bench_function("tail_ratio_0_failing_kept", |b| {
        b.to_async(&rt).iter(|| drive(&failing, "/fail"));
    });
    group.finish();
    for (_, p) in providers {
        let _ = p.shutdown();
    }
    let _ = tail_failing.shutdown();
    let _ = plain_failing_provider.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
