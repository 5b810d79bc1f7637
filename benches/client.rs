//! Client round trip over loopback: a GET to a bare axum server on 127.0.0.1 and the whole
//! response body read, through
//!
//! - hyper-util's client: bare; with `ClientLayer` (sampled, unsampled);
//! - reqwest through `reqwest-middleware`: no middleware; with tracewire's `ClientMiddleware`;
//!   with reqwest-tracing's `TracingMiddleware` bridged to OpenTelemetry by
//!   tracing-opentelemetry (the peer stack; it injects `traceparent` too).
//!
//! A second group measures the layer alone, in process: an inner service that answers at once
//! (no sockets), bare and wrapped in `ClientLayer`.
//!
//! Every instrumented variant exports its spans through a batch span processor into an
//! exporter that discards them. reqwest-tracing supports OpenTelemetry up to 0.32 only, so the
//! peer runs on its own 0.32 SDK (same batch processor and discarding exporter); the library
//! crates stay on 0.33. The server runs on its own thread and runtime, uninstrumented.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use opentelemetry::global;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Sampler;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower::{Layer, Service, ServiceExt};
use tracewire::http::client::ClientLayer;
use tracewire_benches::provider;
use tracewire_http::reqwest::ClientMiddleware;
use tracing_subscriber::layer::SubscriberExt;

/// The same, for the peer's OpenTelemetry 0.32 SDK.
#[derive(Debug)]
struct Discard032;

impl opentelemetry_sdk_0_32::trace::SpanExporter for Discard032 {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk_0_32::trace::SpanData>,
    ) -> opentelemetry_sdk_0_32::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// Starts the upstream on its own thread and runtime; returns its address.
fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route(
                    "/users/{id}",
                    get(|| async { "{\"id\":7,\"name\":\"user-7\"}" }),
                )
                .route(
                    "/traceparent",
                    get(|headers: http::HeaderMap| async move {
                        headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    }),
                );
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

async fn tower_round_trip<S, B>(client: &S, url: &str)
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let request = http::Request::get(url).body(Full::default()).unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap();
    std::hint::black_box(body);
}

async fn reqwest_round_trip(client: &ClientWithMiddleware, url: &str) {
    let response = client.get(url).send().await.unwrap();
    std::hint::black_box(response.bytes().await.unwrap());
}

fn bench(c: &mut Criterion) {
    let addr = start_server();
    let url = format!("http://{addr}/users/7");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    global::set_text_map_propagator(TraceContextPropagator::new());
    let meter_provider = tracewire_benches::idle_meter_provider();
    global::set_meter_provider(meter_provider);

    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let reqwest_bare = ClientBuilder::new(reqwest::Client::new()).build();

    let sampled = provider(Sampler::AlwaysOn);
    global::set_tracer_provider(sampled.clone());
    let hyper_sampled = ClientLayer::new().layer(hyper.clone());
    let reqwest_tracewire = ClientBuilder::new(reqwest::Client::new())
        .with(ClientMiddleware::new())
        .build();
    let unsampled = provider(Sampler::AlwaysOff);
    global::set_tracer_provider(unsampled.clone());
    let hyper_unsampled = ClientLayer::new().layer(hyper.clone());

    // The peer: reqwest-tracing spans, bridged to an OpenTelemetry 0.32 pipeline.
    opentelemetry_0_32::global::set_text_map_propagator(
        opentelemetry_sdk_0_32::propagation::TraceContextPropagator::new(),
    );
    let peer_provider = opentelemetry_sdk_0_32::trace::SdkTracerProvider::builder()
        .with_batch_exporter(Discard032)
        .build();
    let reqwest_peer = ClientBuilder::new(reqwest::Client::new())
        .with(reqwest_tracing::TracingMiddleware::default())
        .build();

    // Every instrumented variant must really propagate, or the comparison is unfair.
    let echo = format!("http://{addr}/traceparent");
    let sends_traceparent = |client: &ClientWithMiddleware| {
        rt.block_on(async {
            let text = client
                .get(&echo)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.starts_with("00-")
        })
    };
    assert!(sends_traceparent(&reqwest_tracewire));
    {
        use opentelemetry_0_32::trace::TracerProvider as _;
        let otel = tracing_opentelemetry_0_33::layer().with_tracer(peer_provider.tracer("peer"));
        let _subscriber =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(otel));
        assert!(sends_traceparent(&reqwest_peer), "reqwest-tracing injects");
    }

    let mut group = c.benchmark_group("client_round_trip");
    group.bench_function("hyper_bare", |b| {
        b.to_async(&rt).iter(|| tower_round_trip(&hyper, &url));
    });
    group.bench_function("hyper_tracewire_sampled", |b| {
        b.to_async(&rt)
            .iter(|| tower_round_trip(&hyper_sampled, &url));
    });
    group.bench_function("hyper_tracewire_unsampled", |b| {
        b.to_async(&rt)
            .iter(|| tower_round_trip(&hyper_unsampled, &url));
    });
    group.bench_function("reqwest_bare", |b| {
        b.to_async(&rt)
            .iter(|| reqwest_round_trip(&reqwest_bare, &url));
    });
    group.bench_function("reqwest_tracewire", |b| {
        b.to_async(&rt)
            .iter(|| reqwest_round_trip(&reqwest_tracewire, &url));
    });
    {
        use opentelemetry_0_32::trace::TracerProvider as _;
        let otel = tracing_opentelemetry_0_33::layer().with_tracer(peer_provider.tracer("peer"));
        let _subscriber =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(otel));
        group.bench_function("reqwest_tracing_opentelemetry", |b| {
            b.to_async(&rt)
                .iter(|| reqwest_round_trip(&reqwest_peer, &url));
        });
    }
    group.finish();

    // The layer's own cost, without sockets: an inner service that answers at once.
    let inner = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"{\"id\":7}",
        ))))
    });
    global::set_tracer_provider(sampled.clone());
    let layered_sampled = ClientLayer::new().layer(inner);
    global::set_tracer_provider(unsampled.clone());
    let layered_unsampled = ClientLayer::new().layer(inner);
    let mut group = c.benchmark_group("client_layer_in_process");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| tower_round_trip(&inner, &url));
    });
    group.bench_function("tracewire_sampled", |b| {
        b.to_async(&rt)
            .iter(|| tower_round_trip(&layered_sampled, &url));
    });
    group.bench_function("tracewire_unsampled", |b| {
        b.to_async(&rt)
            .iter(|| tower_round_trip(&layered_unsampled, &url));
    });
    group.finish();

    let _ = sampled.shutdown();
    let _ = unsampled.shutdown();
    let _ = peer_provider.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
