//! Support code the macros expand to. Not public API: nothing here is covered by semver.

pub use crate::ops::Registration as ObjectiveRegistration;
pub use opentelemetry::KeyValue;
pub use tracewire_core::event::{self, Event};
pub use tracewire_core::traced::{
    CallSite, ErrorRef, Instrumented, Kind, SpanGuard, ViaDebug, ViaDisplay, ViaNothing,
    error_type, field_value,
};
pub use tracing;
