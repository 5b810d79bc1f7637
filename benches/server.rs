//! Per-request cost of the server instrumentation, requests driven through an axum router
//! in-process (no sockets): bare router; `ServerLayer` sampled and unsampled (an always-off
//! sampler, and a parent-based sampler under an unsampled upstream parent; sampled also under
//! a sampled upstream parent with that sampler, naive layer included), with
//! tracewire's W3C codec (the default propagator) and with the SDK's `TraceContextPropagator`
//! (the previous default); a naive hand-written OpenTelemetry layer (the reference: extract
//! with the SDK propagator, one SDK span with five attributes, ended on the response); tower-http
//! `TraceLayer` + tracing-opentelemetry, exporting through the same SDK pipeline; and
//! `ServerLayer` with the trace view recording beside the exporter (its span processor and
//! log layer handing every span and log line to the view's thread).
//!
//! Every instrumented variant exports spans through a batch span processor into an exporter
//! that discards them, and writes its log lines into `io::sink`, so the figures include span
//! creation, attributes, metrics and log formatting but no I/O.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tower::ServiceExt;
use tracewire_benches::{Discard, naive, provider};
use tracing_subscriber::layer::SubscriberExt;

async fn user(axum::extract::Path(id): axum::extract::Path<u64>) -> String {
    tracing::info!(user_id = id, "loading user");
    format!("{{\"id\":{id}}}")
}

fn router() -> Router {
    Router::new().route("/users/{id}", get(user))
}

/// A sampled upstream parent.
const SAMPLED_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// An upstream parent that was not sampled (flags `00`).
const UNSAMPLED_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

async fn drive(app: &Router, traceparent: &'static str) {
    let req = Request::get("/users/7")
        .header("traceparent", traceparent)
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
    let meter_provider = tracewire_benches::idle_meter_provider();
    global::set_meter_provider(meter_provider);

    let sampled = provider(Sampler::AlwaysOn);
    tracewire_core::provider::set_tracer_provider(sampled.clone());
    let tracewire_sampled = router().layer(tracewire::http::ServerLayer::new());
    let unsampled = provider(Sampler::AlwaysOff);
    tracewire_core::provider::set_tracer_provider(unsampled.clone());
    let tracewire_unsampled = router().layer(tracewire::http::ServerLayer::new());

    // Parent-based sampling (the OpenTelemetry default) with an unsampled upstream parent:
    // what most requests of a service behind a sampling edge look like. tracewire is told the
    // sampler is parent-based, as `tracewire::init()` does for `parentbased_*` samplers.
    let parent_based = provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    tracewire_core::provider::set_tracer_provider(parent_based.clone());
    let tracewire_parent_based = router().layer(tracewire::http::ServerLayer::new());
    let naive_parent_based = router().layer(naive::Layer {
        tracer: parent_based.tracer("naive"),
    });

    let naive_sampled = router().layer(naive::Layer {
        tracer: sampled.tracer("naive"),
    });
    let naive_unsampled = router().layer(naive::Layer {
        tracer: unsampled.tracer("naive"),
    });
    let codec = || global::set_text_map_propagator(tracewire::propagation::W3cPropagator::new());
    let sdk = || global::set_text_map_propagator(TraceContextPropagator::new());
    let recorder = tracewire_view::Recorder::new("bench", tracewire_view::Limits::default());
    recorder.enable();
    let viewed = SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .with_span_processor(recorder.processor())
        .with_sampler(Sampler::AlwaysOn)
        .build();
    tracewire_core::provider::set_tracer_provider(viewed.clone());
    let tracewire_viewed = router().layer(tracewire::http::ServerLayer::new());

    let peer_provider = provider(Sampler::AlwaysOn);
    let peer = router().layer(tower_http::trace::TraceLayer::new_for_http());

    let json_to_sink = || {
        tracing_subscriber::registry()
            .with(tracewire::logs::JsonLayer::new().with_writer(std::io::sink))
    };

    let bare = router();
    let mut group = c.benchmark_group("server_request");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| drive(&bare, SAMPLED_PARENT));
    });
    group.bench_function("naive_layer_sampled", |b| {
        b.to_async(&rt)
            .iter(|| drive(&naive_sampled, SAMPLED_PARENT));
    });
    group.bench_function("naive_layer_unsampled", |b| {
        b.to_async(&rt)
            .iter(|| drive(&naive_unsampled, SAMPLED_PARENT));
    });
    group.bench_function("naive_layer_unsampled_parent", |b| {
        b.to_async(&rt)
            .iter(|| drive(&naive_parent_based, UNSAMPLED_PARENT));
    });
    group.bench_function("naive_layer_sampled_parent", |b| {
        b.to_async(&rt)
            .iter(|| drive(&naive_parent_based, SAMPLED_PARENT));
    });
    // Without a log subscriber: spans, metrics and headers only. First with the SDK's
    // propagator (the previous default), then with tracewire's codec (the default).
    sdk();
    group.bench_function("tracewire_sampled_no_logs_sdk_propagator", |b| {
        b.to_async(&rt)
            .iter(|| drive(&tracewire_sampled, SAMPLED_PARENT));
    });
    group.bench_function("tracewire_unsampled_no_logs_sdk_propagator", |b| {
        b.to_async(&rt)
            .iter(|| drive(&tracewire_unsampled, SAMPLED_PARENT));
    });
    codec();
    group.bench_function("tracewire_sampled_no_logs", |b| {
        b.to_async(&rt)
            .iter(|| drive(&tracewire_sampled, SAMPLED_PARENT));
    });
    group.bench_function("tracewire_unsampled_no_logs", |b| {
        b.to_async(&rt)
            .iter(|| drive(&tracewire_unsampled, SAMPLED_PARENT));
    });
    tracewire_core::traced::set_skip_unsampled_children(true);
    group.bench_function("tracewire_unsampled_parent_no_logs", |b| {
        b.to_async(&rt)
            .iter(|| drive(&tracewire_parent_based, UNSAMPLED_PARENT));
    });
    // The same sampler under a sampled upstream parent: the span is known to record before it
    // is built.
    group.bench_function("tracewire_sampled_parent_no_logs", |b| {
        b.to_async(&rt)
            .iter(|| drive(&tracewire_parent_based, SAMPLED_PARENT));
    });
    tracewire_core::traced::set_skip_unsampled_children(false);
    {
        let _logs = tracing::subscriber::set_default(json_to_sink());
        group.bench_function("tracewire_sampled", |b| {
            b.to_async(&rt)
                .iter(|| drive(&tracewire_sampled, SAMPLED_PARENT));
        });
        group.bench_function("tracewire_unsampled", |b| {
            b.to_async(&rt)
                .iter(|| drive(&tracewire_unsampled, SAMPLED_PARENT));
        });
    }
    {
        let _logs = tracing::subscriber::set_default(json_to_sink().with(recorder.log_layer()));
        group.bench_function("tracewire_sampled_with_view", |b| {
            b.to_async(&rt)
                .iter(|| drive(&tracewire_viewed, SAMPLED_PARENT));
        });
    }
    {
        let otel = tracing_opentelemetry::layer().with_tracer(peer_provider.tracer("peer"));
        let subscriber = tracing_subscriber::registry().with(otel).with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::sink),
        );
        let _logs = tracing::subscriber::set_default(subscriber);
        group.bench_function("tower_http_trace_tracing_opentelemetry", |b| {
            b.to_async(&rt).iter(|| drive(&peer, SAMPLED_PARENT));
        });
    }
    group.finish();
    let _ = sampled.shutdown();
    let _ = unsampled.shutdown();
    let _ = parent_based.shutdown();
    let _ = peer_provider.shutdown();
    let _ = viewed.shutdown();
    eprintln!(
        "view: {} spans and log lines dropped at the hand-off, {:?}",
        recorder.dropped(),
        recorder.store().stats()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
