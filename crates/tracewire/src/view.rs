//! The embedded trace view (feature `view`): a [`ViewService`] over the traces this process
//! recorded recently.

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::TracerProviderBuilder;
#[cfg(feature = "view")]
pub use tracewire_view::{Limits, ViewService};

#[cfg(feature = "view")]
use crate::Telemetry;

/// Where the quickstart and the docs mount the view.
#[cfg(feature = "view")]
pub const DEFAULT_BASE: &str = "/_tracewire";

/// The recorder wired into the pipeline when the `view` feature is on; nothing otherwise.
pub(crate) struct View {
    #[cfg(feature = "view")]
    recorder: tracewire_view::Recorder,
}

#[cfg(feature = "view")]
pub(crate) type LogLayer = tracewire_view::ViewLogLayer;
#[cfg(not(feature = "view"))]
pub(crate) type LogLayer = tracing_subscriber::layer::Identity;

impl View {
    #[cfg_attr(not(feature = "view"), allow(unused_variables))]
    pub(crate) fn new(
        resource: &Resource,
        sensitive: &tracewire_core::redact::SensitiveHeaders,
    ) -> Self {
        #[cfg(feature = "view")]
        {
            let service = resource
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            Self {
                recorder: tracewire_view::Recorder::new(service, Limits::default())
                    .with_sensitive_fields(sensitive.clone()),
            }
        }
        #[cfg(not(feature = "view"))]
        Self {}
    }

    /// Adds the view's span processor (inert until the view is mounted).
    pub(crate) fn add_processor(&self, builder: TracerProviderBuilder) -> TracerProviderBuilder {
        #[cfg(feature = "view")]
        {
            builder.with_span_processor(self.recorder.processor())
        }
        #[cfg(not(feature = "view"))]
        builder
    }

    /// The `tracing` layer capturing log lines for the trace page.
    pub(crate) fn log_layer(&self) -> LogLayer {
        #[cfg(feature = "view")]
        {
            self.recorder.log_layer()
        }
        #[cfg(not(feature = "view"))]
        tracing_subscriber::layer::Identity::new()
    }
}

#[cfg(feature = "view")]
impl Telemetry {
    /// The trace view of this process, to mount at `/_tracewire`:
    /// `Router::nest_service("/_tracewire", telemetry.view_service())`.
    ///
    /// Recording starts with the first call; until then the view's span processor and log
    /// layer return at once. Spans are handed to a background thread through a bounded
    /// channel (full: dropped and counted, never waited on) and kept in a ring of at most
    /// 1 000 traces and 32 MiB (estimated); traces the sampler did not keep are evicted first.
    /// Pages: the trace list at `/_tracewire/`, a trace at `/_tracewire/traces/{trace_id}`,
    /// `/_tracewire/red`, `/_tracewire/map`, and their JSON under `/_tracewire/api/`.
    /// Mount it outside the `ServerLayer` so viewing traces does not record more.
    pub fn view_service(&self) -> ViewService {
        self.view.recorder.service(DEFAULT_BASE)
    }

    /// As [`Telemetry::view_service`], for a view mounted under `base` instead.
    pub fn view_service_at(&self, base: &str) -> ViewService {
        self.view.recorder.service(base)
    }

    /// Spans and log lines the view dropped because its hand-off was full.
    pub fn view_dropped(&self) -> u64 {
        self.view.recorder.dropped()
    }
}
