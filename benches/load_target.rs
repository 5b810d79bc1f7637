//! Target of the `scripts/load-test` wrk run: one small axum app, served bare, instrumented
//! with tracewire, or instrumented with the naive hand-written layer, and a discarding
//! OTLP/HTTP collector for the instrumented ones to export to.
//!
//! ```sh
//! cargo run --release -p tracewire-benches --example load-target -- collector 127.0.0.1:4318
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//!     cargo run --release -p tracewire-benches --example load-target -- instrumented 127.0.0.1:3000
//! cargo run --release -p tracewire-benches --example load-target -- bare 127.0.0.1:3001
//! ```
//!
//! `bare` serves `GET /users/{id}` with plain axum; `instrumented` serves the same router with
//! `tracewire::init()` (spans and metrics over OTLP, JSON logs on stdout) and `ServerLayer`;
//! `naive` serves it with the naive hand-written layer of the server bench
//! ([`tracewire_benches::naive`]) on an SDK tracer provider set up as such a user would: the
//! OTLP/HTTP span exporter in a batch processor, the sampler from `OTEL_TRACES_SAMPLER`, no
//! metrics and no logs; `collector` answers every OTLP/HTTP export with an empty success and
//! drops the data. Each prints `listening on ADDR` once bound and runs until SIGINT or
//! SIGTERM.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};

async fn user(Path(id): Path<u64>) -> String {
    format!("{{\"id\":{id},\"name\":\"user {id}\"}}")
}

fn app() -> Router {
    Router::new().route("/users/{id}", get(user))
}

/// An empty `Export*ServiceResponse` (zero bytes of protobuf) for every signal.
async fn accept(body: axum::body::Bytes) -> ([(axum::http::HeaderName, &'static str); 1], Vec<u8>) {
    std::hint::black_box(body);
    ([(CONTENT_TYPE, "application/x-protobuf")], Vec::new())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn serve(router: Router, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_string())
        .parse()?;
    match mode.as_str() {
        "bare" => serve(app(), addr).await?,
        "instrumented" => {
            let telemetry = tracewire::init()?;
            serve(app().layer(tracewire::http::ServerLayer::new()), addr).await?;
            telemetry.shutdown()?;
        }
        "naive" => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::{Protocol, WithExportConfig as _};
            // Endpoint and sampler from the OTEL_* variables, as the SDK reads them.
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let layer = tracewire_benches::naive::Layer {
                tracer: provider.tracer("naive"),
            };
            serve(app().layer(layer), addr).await?;
            provider.shutdown()?;
        }
        "collector" => {
            let router = Router::new()
                .route("/v1/traces", post(accept))
                .route("/v1/metrics", post(accept))
                .route("/v1/logs", post(accept));
            serve(router, addr).await?;
        }
        other => {
            return Err(
                format!("unknown mode {other:?}: bare, instrumented, naive or collector").into(),
            );
        }
    }
    Ok(())
}
