//! What a [`TracedChannel`](crate::TracedChannel) shares with its clones and the consumers it
//! creates: the tracer, the instruments, the broker address and the parent mode.

use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use tracewire_core::attributes as attr;
use tracewire_core::messaging::{MessagingInstruments, ParentMode};

/// State shared by every clone of a [`TracedChannel`](crate::TracedChannel) and the consumers it creates.
pub(crate) struct Shared {
    pub(crate) tracer: BoxedTracer,
    pub(crate) instruments: MessagingInstruments,
    pub(crate) server: Option<(String, u16)>,
    pub(crate) parent_mode: ParentMode,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            tracer: tracewire_core::tracer(),
            instruments: MessagingInstruments::new(),
            server: None,
            parent_mode: ParentMode::Parent,
        }
    }

    pub(crate) fn push_server(&self, attrs: &mut Vec<KeyValue>) {
        if let Some((host, port)) = &self.server {
            attrs.push(KeyValue::new(attr::SERVER_ADDRESS, host.clone()));
            attrs.push(KeyValue::new(attr::SERVER_PORT, i64::from(*port)));
        }
    }
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Self {
            tracer: tracewire_core::tracer(),
            instruments: self.instruments.clone(),
            server: self.server.clone(),
            parent_mode: self.parent_mode,
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("server", &self.server)
            .field("parent_mode", &self.parent_mode)
            .finish_non_exhaustive()
    }
}
