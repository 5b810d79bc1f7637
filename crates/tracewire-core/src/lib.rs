//! The shared context model of tracewire.
//!
//! Every transport crate (`tracewire-http`, `tracewire-amqp`, `tracewire-kafka`) and the
//! `#[traced]` macro build on the pieces here:
//!
//! - [`propagation`]: extract and inject OpenTelemetry context through the globally configured
//!   `TextMapPropagator`, with size limits and a counter for every header that was rejected;
//! - [`attributes`]: the attribute keys tracewire emits, taken from
//!   `opentelemetry-semantic-conventions`;
//! - [`metrics`]: the tracewire meter and histogram helpers with semantic-convention buckets;
//! - [`messaging`]: what producers and consumers of every broker share (instruments, parenting);
//! - [`redact`]: the redaction policy for headers, query strings and URLs;
//! - [`logs`]: the JSON log layer that stamps every `tracing` event with the current trace id;
//! - [`context`]: helpers to carry the current context into spawned work;
//! - [`w3c`]: tracewire's own W3C trace-context and baggage codec, the default propagator.
//! - [`propagators`]: B3 and Jaeger propagation formats;
//! - [`bridge`]: the opt-in layer turning `tracing` spans into OpenTelemetry spans;
//! - [`provider`]: the tracer the instrumentation starts spans with (the SDK's own when
//!   tracewire installed the provider).
//!
//! Users normally reach all of this through the `tracewire` facade.

pub mod attributes;
pub mod bridge;
pub mod context;
pub mod dropped;
pub mod error;
pub mod event;
pub mod logs;
pub mod messaging;
pub mod metrics;
pub mod operation;
pub mod propagation;
pub mod propagators;
pub mod provider;
pub mod redact;
pub mod retry;
#[cfg(feature = "signal")]
pub mod signal;
pub mod text;
pub mod traced;
pub mod w3c;

pub use context::RequestId;

use opentelemetry::InstrumentationScope;
use opentelemetry::global::BoxedTracer;

/// Name of the instrumentation scope every tracewire span and metric is reported under.
pub const SCOPE_NAME: &str = "tracewire";

/// Version of the instrumentation scope (this crate's version).
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(SCOPE_VERSION)
        .with_schema_url(opentelemetry_semantic_conventions::SCHEMA_URL)
        .build()
}

/// The tracer tracewire instrumentation starts its spans with, taken from the global tracer
/// provider at the time of the call.
///
/// Instrumentation calls this once (when a layer or wrapper is built), never per request, so
/// call `tracewire::init()` before building layers. The server layer and `#[traced]` use
/// [`provider::tracer`] instead, which starts spans with the SDK's tracer directly when it can.
pub fn tracer() -> BoxedTracer {
    opentelemetry::global::tracer_with_scope(scope())
}
