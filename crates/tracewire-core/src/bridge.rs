//! The `tracing` span bridge: users' `#[tracing::instrument]` functions and
//! `tracing::info_span!` spans become OpenTelemetry spans in the current trace.
//!
//! [`TracingBridge`] is a `tracing-subscriber` layer. It keeps no context model of its own:
//!
//! - a new `tracing` span starts an OpenTelemetry span whose parent is the OpenTelemetry context
//!   current at that moment ([`Context::current`]): the tracewire server span, `#[traced]` span
//!   or consumer span the code runs in, or an enclosing bridged span. A span with an explicit
//!   `parent:` takes that span's OpenTelemetry context; an explicit root (`parent: None`) starts
//!   a new trace;
//! - while a bridged span is entered, its context is attached on that thread, so tracewire
//!   spans started inside it (a `#[traced]` call, an outgoing request) are its children, and
//!   log lines carry its `span_id`;
//! - the span's fields (also those recorded later with `Span::record`) become attributes, and
//!   `tracing` events recorded while it is the current span become span events (name = the
//!   event's message);
//! - the span ends when the `tracing` span closes (its last handle is dropped).
//!
//! Spans of the exporters' own libraries (`hyper`, `h2`, `tonic`, `reqwest`, `tower`,
//! `opentelemetry*`) and spans created while telemetry is suppressed are not bridged, so
//! exporting never feeds itself.
//!
//! ```
//! use tracing_subscriber::prelude::*;
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracewire_core::bridge::TracingBridge::new());
//! tracing::subscriber::with_default(subscriber, || {
//!     let _entered = tracing::info_span!("load_cart", cart.id = 7).entered();
//!     // OpenTelemetry's current context is now the `load_cart` span.
//! });
//! ```

use std::cell::RefCell;
use std::fmt;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, ContextGuard, InstrumentationScope, Key, KeyValue, StringValue};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer;
use tracing_subscriber::registry::LookupSpan;

/// Name of the instrumentation scope bridged spans are reported under.
pub const SCOPE_NAME: &str = "tracewire.tracing";

/// Targets whose spans and events belong to the telemetry pipeline itself (HTTP and gRPC
/// clients of the exporters, the OpenTelemetry SDK): never bridged, never exported as logs.
pub const PIPELINE_TARGETS: [&str; 8] = [
    "hyper",
    "h2",
    "tonic",
    "tower",
    "reqwest",
    "rustls",
    "opentelemetry",
    "tracewire.pipeline",
];

/// Whether `target` belongs to the telemetry pipeline (see [`PIPELINE_TARGETS`]).
pub fn is_pipeline_target(target: &str) -> bool {
    PIPELINE_TARGETS.iter().any(|p| {
        target.starts_with(p)
            && matches!(
                target.as_bytes().get(p.len()),
                None | Some(b':') | Some(b'_')
            )
    })
}

/// A `tracing-subscriber` layer turning `tracing` spans into OpenTelemetry spans of the
/// current trace. See the [module documentation](self).
pub struct TracingBridge {
    tracer: BoxedTracer,
}

impl fmt::Debug for TracingBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingBridge").finish_non_exhaustive()
    }
}

impl Default for TracingBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl TracingBridge {
    /// A bridge starting its spans with the global tracer provider (scope [`SCOPE_NAME`]), as
    /// installed when this is called.
    pub fn new() -> Self {
        let scope = InstrumentationScope::builder(SCOPE_NAME)
            .with_version(crate::SCOPE_VERSION)
            .build();
        Self::with_tracer(opentelemetry::global::tracer_with_scope(scope))
    }

    /// A bridge starting its spans with `tracer`.
    pub fn with_tracer(tracer: BoxedTracer) -> Self {
        Self { tracer }
    }
}

/// The OpenTelemetry context of a bridged span, kept in the `tracing` span's extensions.
struct Bridged {
    cx: Context,
}

thread_local! {
    /// Contexts attached by entered bridged spans on this thread, innermost last.
    static ENTERED: RefCell<Vec<(u64, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

/// Collects `tracing` fields as OpenTelemetry attributes.
struct Attrs<'a> {
    out: &'a mut Vec<KeyValue>,
    message: Option<&'a mut Option<String>>,
}

impl Attrs<'_> {
    fn push(&mut self, field: &Field, value: opentelemetry::Value) {
        self.out
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
}

impl Visit for Attrs<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            *message = Some(value.to_owned());
            return;
        }
        self.push(field, StringValue::from(value.to_owned()).into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, v.into()),
            Err(_) => self.push(field, value.to_string().into()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            *message = Some(format!("{value:?}"));
            return;
        }
        self.push(field, format!("{value:?}").into());
    }
}

impl<S> Layer<S> for TracingBridge
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: layer::Context<'_, S>) {
        let meta = attrs.metadata();
        if is_pipeline_target(meta.target()) || Context::is_current_telemetry_suppressed() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = if attrs.is_root() {
            Context::new()
        } else if let Some(parent) = attrs.parent() {
            ctx.span(parent)
                .and_then(|p| p.extensions().get::<Bridged>().map(|b| b.cx.clone()))
                .unwrap_or_else(Context::current)
        } else {
            Context::current()
        };
        let mut attributes = Vec::with_capacity(meta.fields().len());
        attrs.record(&mut Attrs {
            out: &mut attributes,
            message: None,
        });
        let builder = self
            .tracer
            .span_builder(meta.name())
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes);
        let otel = self.tracer.build_with_context(builder, &parent);
        let cx = crate::provider::context_with_span(&parent, otel);
        span.extensions_mut().insert(Bridged { cx });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(bridged) = extensions.get::<Bridged>() else {
            return;
        };
        let mut attributes = Vec::new();
        values.record(&mut Attrs {
            out: &mut attributes,
            message: None,
        });
        bridged.cx.span().set_attributes(attributes);
    }

    fn on_event(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let extensions = span.extensions();
        let Some(bridged) = extensions.get::<Bridged>() else {
            return;
        };
        let otel = bridged.cx.span();
        if !otel.is_recording() {
            return;
        }
        // A contextual event goes to the bridged span only while it is the current
        // OpenTelemetry span (not while a tracewire span started inside it is).
        if event.is_contextual() {
            let current = Context::current();
            if current.span().span_context().span_id() != otel.span_context().span_id() {
                return;
            }
        }
        let meta = event.metadata();
        let mut message = None;
        let mut attributes = Vec::with_capacity(meta.fields().len() + 1);
        attributes.push(KeyValue::new("level", meta.level().as_str()));
        event.record(&mut Attrs {
            out: &mut attributes,
            message: Some(&mut message),
        });
        let name = message.unwrap_or_else(|| meta.name().to_owned());
        otel.add_event(name, attributes);
    }

    fn on_enter(&self, id: &Id, ctx: layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(bridged) = extensions.get::<Bridged>() else {
            return;
        };
        let guard = bridged.cx.clone().attach();
        ENTERED.with(|entered| entered.borrow_mut().push((id.into_u64(), guard)));
    }

    fn on_exit(&self, id: &Id, _ctx: layer::Context<'_, S>) {
        let id = id.into_u64();
        let guard = ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            let at = entered.iter().rposition(|(entry, _)| *entry == id)?;
            Some(entered.remove(at))
        });
        // Detached outside the borrow: dropping a guard runs no code of ours, but stays safe
        // should it ever re-enter.
        drop(guard);
    }

    fn on_close(&self, id: Id, ctx: layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(bridged) = span.extensions_mut().remove::<Bridged>() {
            bridged.cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Status, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::prelude::*;

    use super::*;

    fn setup() -> (InMemorySpanExporter, SdkTracerProvider, BoxedTracer) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer("test")));
        (exporter, provider, tracer)
    }

    fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {spans:?}"))
    }

    #[test]
    fn spans_join_the_current_trace_and_parent_otel_spans() {
        let (exporter, provider, tracer) = setup();
        let otel_tracer = provider.tracer("outer");
        let subscriber = tracing_subscriber::registry().with(TracingBridge::with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            // An OpenTelemetry span is current, as in a tracewire request handler.
            let outer = otel_tracer.start("GET /users/{id}");
            let _outer = Context::current_with_span(outer).attach();
            let span =
                tracing::info_span!("load_user", user.id = 7_u64, cached = tracing::field::Empty);
            {
                let _entered = span.enter();
                span.record("cached", true);
                tracing::info!(rows = 1_i64, "row fetched");
                // A tracewire span started inside the tracing span is its child.
                let inner = otel_tracer.start("SELECT users");
                drop(inner);
                // Events while a tracewire span is current do not land on the tracing span.
                let inner = otel_tracer.start("#[traced] helper");
                let cx = Context::current_with_span(inner);
                {
                    let _guard = cx.clone().attach();
                    tracing::info!("inside helper");
                }
                cx.span().end();
            }
            drop(span);
        });
        let spans = exporter.get_finished_spans().unwrap();
        let server = find(&spans, "GET /users/{id}");
        let load = find(&spans, "load_user");
        let select = find(&spans, "SELECT users");
        assert_eq!(load.span_context.trace_id(), server.span_context.trace_id());
        assert_eq!(load.parent_span_id, server.span_context.span_id());
        assert_eq!(
            select.span_context.trace_id(),
            server.span_context.trace_id()
        );
        assert_eq!(select.parent_span_id, load.span_context.span_id());
        assert!(load.attributes.contains(&KeyValue::new("user.id", 7_i64)));
        assert!(load.attributes.contains(&KeyValue::new("cached", true)));
        let events: Vec<&str> = load.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, ["row fetched"]);
        let event = &load.events.events[0];
        assert!(event.attributes.contains(&KeyValue::new("rows", 1_i64)));
        assert!(event.attributes.contains(&KeyValue::new("level", "INFO")));
        assert_eq!(load.status, Status::Unset);
    }

    #[test]
    fn nesting_explicit_parents_and_roots() {
        let (exporter, _provider, tracer) = setup();
        let subscriber = tracing_subscriber::registry().with(TracingBridge::with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let a = tracing::info_span!("a");
            let _a = a.enter();
            let b = tracing::info_span!("b");
            let c = tracing::info_span!(parent: &a, "c");
            let root = tracing::info_span!(parent: None, "root");
            let pipeline = tracing::info_span!(target: "hyper::client", "pooled");
            // Entering `b` makes it current: a span created inside is its child.
            let d = b.in_scope(|| tracing::info_span!("d"));
            drop((b, c, root, pipeline, d));
        });
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 5, "{spans:?}");
        let a = find(&spans, "a");
        let b = find(&spans, "b");
        assert_eq!(b.parent_span_id, a.span_context.span_id());
        assert_eq!(find(&spans, "c").parent_span_id, a.span_context.span_id());
        assert_eq!(find(&spans, "d").parent_span_id, b.span_context.span_id());
        let root = find(&spans, "root");
        assert_ne!(root.span_context.trace_id(), a.span_context.trace_id());
        assert_eq!(root.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    }

    #[test]
    fn pipeline_targets() {
        assert!(is_pipeline_target("hyper"));
        assert!(is_pipeline_target("hyper_util::client"));
        assert!(is_pipeline_target("opentelemetry_sdk"));
        assert!(is_pipeline_target("h2::codec"));
        assert!(!is_pipeline_target("hyperion"));
        assert!(!is_pipeline_target("shop::tower_defense"));
        assert!(!is_pipeline_target("tracewire::access"));
    }
}
