//! Test support for tracewire and for services instrumented with it.
//!
//! - [`Capture`] installs in-memory OpenTelemetry providers, the W3C propagators and a JSON log
//!   subscriber for the current process, and hands back what was recorded: finished spans,
//!   metric points, log lines. Run tests with `cargo nextest` (one process per test), since
//!   these are process-wide globals.
//! - [`OtlpReceiver`] is a real OTLP endpoint (gRPC and HTTP/protobuf on loopback ports) that
//!   decodes what exporters send with `opentelemetry-proto` (spans, metrics, log records, and
//!   how each request arrived: headers, gzip, TLS), to check what goes over the wire.
//! - `Browser` (feature `browser`) drives headless Chromium over WebDriver, for pages.
//! - [`SpanDataExt`], [`MetricPoint`] and [`attrs`] make assertions short and readable.
//! - [`conformance`] runs the same messaging scenarios on every broker integration and reduces
//!   what they recorded to a shape that must be identical across brokers.
//! - [`full_context`] and [`assert_full_context`]: the context every carrier must write and
//!   read back whole.

pub mod attrs;
#[cfg(feature = "browser")]
mod browser;
mod capture;
pub mod conformance;
mod context;
mod otlp;
mod tansu;
mod tls;

#[cfg(feature = "browser")]
pub use browser::Browser;
pub use capture::{Capture, MetricPoint, PointValue, SpanDataExt, trace_id_of};
pub use context::{FULL_TRACEPARENT, FULL_TRACESTATE, assert_full_context, full_context};
pub use otlp::{
    OtlpReceiver, ReceivedExemplar, ReceivedLog, ReceivedMetricPoint, ReceivedRequest, ReceivedSpan,
};
pub use tansu::PrivateTansu;

/// Re-exported so tests can name span data without depending on the SDK directly.
pub use opentelemetry_sdk::trace::SpanData;
