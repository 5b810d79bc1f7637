//! # tracewire
//!
//! Observability for Rust services with almost no code. One call sets up traces, metrics and
//! JSON logs; one layer instruments an axum router; one attribute instruments a function;
//! wrapped lapin and rdkafka clients carry the trace through RabbitMQ and Kafka.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! async fn get_user() -> &'static str {
//!     tracing::info!("loading user"); // this line carries the request's trace id
//!     "{}"
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let telemetry = tracewire::init()?; // OTEL_* variables; flushes on drop
//!     let app = Router::new()
//!         .route("/users/{id}", get(get_user))
//!         .route_service("/metrics", telemetry.metrics_service())
//!         .layer(tracewire::http::ServerLayer::new());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! What [`init`] configures, and the variables it reads, is described on [`Builder`]; the
//! attributes, metric names and log schema are listed in `docs/conventions.md`.
//!
//! ## Features
//! - `http` (default): [`http::ServerLayer`] and the client layer.
//! - `macros`: `#[traced]` and `#[derive(Event)]`.
//! - `amqp`: RabbitMQ instrumentation for lapin.
//! - `kafka`: Kafka instrumentation for rdkafka.
//! - `view`: the embedded trace view, `Telemetry::view_service()`.
//! - `full`: all of the above.

pub mod config;
mod dropped;
mod exporter;
mod init;
mod metrics_service;
pub mod ops;
mod resource;
pub mod sampling;
mod view;

pub use init::{Builder, InitError, OtlpProtocol, Telemetry, builder, init};
pub use metrics_service::MetricsService;
/// The embedded trace view: what [`Telemetry::view_service`] serves.
#[cfg(feature = "view")]
pub mod trace_view {
    pub use crate::view::{DEFAULT_BASE, Limits, ViewService};
}
mod shutdown;

pub use shutdown::{ShutdownError, ShutdownReport};

pub use tracewire_core::RequestId;
pub use tracewire_core::context::in_current_context;

/// Counts of the telemetry the pipeline dropped instead of slowing the service, by signal and
/// reason (reported as `tracewire.telemetry.dropped`).
pub mod drops {
    pub use tracewire_core::dropped::*;
}

/// Logging pieces, for users who assemble their own `tracing` subscriber.
pub mod logs {
    pub use tracewire_core::logs::JsonLayer;
}

/// The opt-in bridge making `tracing` spans OpenTelemetry spans of the current trace
/// (`TRACEWIRE_TRACING_SPANS=true` or [`Builder::tracing_spans`]).
pub mod bridge {
    pub use tracewire_core::bridge::*;
}

/// Propagation formats besides W3C trace context, chosen with `OTEL_PROPAGATORS`.
pub mod propagators {
    pub use tracewire_core::propagators::*;
}

/// The redaction policy: sensitive header names and helpers.
pub mod redact {
    pub use tracewire_core::redact::*;
}

/// Propagation helpers (extract/inject through the configured propagator).
pub mod propagation {
    pub use tracewire_core::propagation::*;
    /// tracewire's own W3C codec (the default propagator) and its parsers and formatters.
    pub use tracewire_core::w3c::{self, W3cPropagator};
}

/// The OpenTelemetry API crate tracewire is built on, re-exported so users need no second
/// version in their tree.
pub use opentelemetry;

/// Spawns `future` on the current tokio runtime with the caller's OpenTelemetry context
/// attached, so its spans and log lines stay in the caller's trace.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current_context(future))
}

/// Resolves when the process is asked to stop: SIGINT (Ctrl-C) or SIGTERM (what `kill`,
/// systemd and container runtimes send) alike. Await it to stop serving and consuming, then
/// drop or shut down the [`Telemetry`] guard so pending spans and metrics are flushed.
///
/// A second SIGINT or SIGTERM while the process is stopping exits it at once (status 130), so
/// a stop that hangs can always be cut short.
///
/// ```no_run
/// # async fn demo(app: axum::Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// axum::serve(listener, app)
///     .with_graceful_shutdown(tracewire::shutdown_signal())
///     .await
/// # }
/// ```
pub async fn shutdown_signal() {
    tracewire_core::signal::shutdown_signal().await;
}

#[cfg(feature = "http")]
pub use tracewire_http as http;

#[cfg(feature = "amqp")]
pub use tracewire_amqp as amqp;

#[cfg(feature = "kafka")]
pub use tracewire_kafka as kafka;

#[cfg(feature = "macros")]
pub use tracewire_macros::{Event, objective, traced};

/// The trait every `#[derive(Event)]` type implements (`emit()`, its schema).
#[cfg(feature = "macros")]
pub use tracewire_core::event::Event;

/// The registry of derived events and the schema gate: `events()`, `export()`,
/// `assert_file()`, `check_file()`, `update_file()`.
#[cfg(feature = "macros")]
pub use tracewire_core::event::schema;

#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod __private;
