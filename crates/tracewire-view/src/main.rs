//! `tracewire-view`: a trace view and service map fed over OTLP.
//!
//! ```sh
//! cargo run --release -p tracewire-view
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run --example quickstart
//! # then open http://127.0.0.1:16686/ and http://127.0.0.1:16686/map
//! ```
//!
//! Variables: `TRACEWIRE_VIEW_ADDR` (pages, `127.0.0.1:16686`), `TRACEWIRE_VIEW_OTLP_GRPC_ADDR`
//! (`127.0.0.1:4317`), `TRACEWIRE_VIEW_OTLP_HTTP_ADDR` (`127.0.0.1:4318`),
//! `TRACEWIRE_VIEW_MAX_TRACES` (1000), `TRACEWIRE_VIEW_MAX_BYTES` (33554432). Port 0 picks a
//! free port; the first line on standard output is JSON with the addresses bound.

use tracewire_view::receiver::{Config, serve, shutdown_signal};

#[tokio::main]
async fn main() {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tracewire-view: {error}");
            std::process::exit(2);
        }
    };
    let running = match serve(&config).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("tracewire-view: {error}");
            std::process::exit(1);
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "message": "tracewire-view listening",
            "addr": running.ui.to_string(),
            "url": format!("http://{}/", running.ui),
            "otlp_grpc": running.otlp_grpc.to_string(),
            "otlp_http": running.otlp_http.to_string(),
            "max_traces": config.limits.max_traces,
            "max_bytes": config.limits.max_bytes,
        })
    );
    shutdown_signal().await;
    drop(running);
}
