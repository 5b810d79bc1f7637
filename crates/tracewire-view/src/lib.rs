//! # tracewire-view
//!
//! See traces without a collector. Two ways in, one set of pages:
//!
//! - **In-process**: a [`Recorder`] takes the spans this process ends (a span processor beside
//!   the exporting one) and the log lines written inside them (a `tracing` layer), hands them
//!   to one background thread over a bounded channel, and keeps the recent traces in a
//!   [`Store`] bounded in traces and bytes. The `tracewire` facade wires it for you:
//!   `Router::nest_service("/_tracewire", telemetry.view_service())`.
//! - **Standalone**: the `tracewire-view` binary (`cargo run --release -p tracewire-view`)
//!   receives OTLP over gRPC (`127.0.0.1:4317`) and HTTP/protobuf (`127.0.0.1:4318`) from any
//!   number of services and serves the same pages, plus the service map, on
//!   `127.0.0.1:16686`.
//!
//! The pages ([`ViewService`]) are server-rendered HTML with inline CSS and an inline SVG map:
//! no script, no build step, nothing fetched from elsewhere. Every page has a JSON twin under
//! `/api/`.
//!
//! What the view shows is what the exporter sees: the attributes are recorded already
//! redacted by the layers, and log fields named like sensitive headers are redacted as in
//! the JSON logs. Spans a sampler recorded but did not keep stay visible while their trace
//! is in the ring, and are evicted first.

mod analysis;
mod html;
mod model;
#[cfg(feature = "receiver")]
pub mod receiver;
mod recorder;
mod service;
mod store;

pub use analysis::{EdgeKind, MapEdge, MapNode, RedKind, RedRow, ServiceMap, red, service_map};
pub use model::{Kind, LogRecord, SpanEvent, SpanLink, SpanRecord, StatusCode};
pub use recorder::{DEFAULT_CHANNEL_CAPACITY, Recorder, ViewLogLayer, ViewProcessor};
pub use service::ViewService;
pub use store::{Limits, Store, StoreStats, TraceDetail, TraceQuery, TraceSummary, WaterfallSpan};
