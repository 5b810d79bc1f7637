//! The tracer tracewire's instrumentation starts its spans with: the SDK's own tracer when the
//! global tracer provider is an SDK provider installed through [`set_tracer_provider`]
//! (`tracewire::init()` does), the boxed global tracer otherwise.
//!
//! OpenTelemetry's global tracer is a trait object: every span it starts is boxed, and the
//! context then boxes that box again. [`tracer()`] hands out the concrete SDK tracer instead
//! whenever the global provider is one tracewire installed, so a span is one allocation less
//! and its calls are direct. It is resolved from whatever provider is global when it is called
//! (instrumentation calls it when a layer or wrapper is built, or on a `#[traced]` function's
//! first call): a provider installed afterwards, with this function or with
//! `opentelemetry::global::set_tracer_provider`, is used by everything resolved after that, and
//! any provider tracewire did not install is used through the boxed global tracer, as before.
//!
//! ```
//! use opentelemetry::trace::{Span as _, Tracer as _};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! tracewire_core::provider::set_tracer_provider(SdkTracerProvider::builder().build());
//! let tracer = tracewire_core::provider::tracer();
//! assert!(tracer.is_sdk());
//! let mut span = tracer.start("demo");
//! span.end();
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{self, SpanBuilder, SpanContext, Status};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

thread_local! {
    /// Set by [`Registered`] while the global provider builds a tracer on this thread.
    static RESOLVED: RefCell<Option<SdkTracer>> = const { RefCell::new(None) };
}

/// An SDK tracer provider installed globally by tracewire: behaves exactly as the provider,
/// and tells [`tracer()`] the concrete tracer it built.
#[derive(Debug)]
struct Registered(SdkTracerProvider);

impl trace::TracerProvider for Registered {
    type Tracer = SdkTracer;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> SdkTracer {
        let tracer = self.0.tracer_with_scope(scope);
        RESOLVED.with(|resolved| *resolved.borrow_mut() = Some(tracer.clone()));
        tracer
    }
}

/// Installs `provider` as OpenTelemetry's global tracer provider (like
/// `opentelemetry::global::set_tracer_provider`), so that tracewire's instrumentation resolved
/// from now on starts its spans with the SDK's tracer directly.
pub fn set_tracer_provider(provider: SdkTracerProvider) {
    opentelemetry::global::set_tracer_provider(Registered(provider));
}

static PARENT_BASED: AtomicBool = AtomicBool::new(false);

/// Tells tracewire's instrumentation that the global tracer provider's sampler is
/// parent-based (`Sampler::ParentBased`, OpenTelemetry's default `parentbased_*` samplers): a
/// span whose parent is valid and not sampled is then dropped by the sampler, whatever its
/// name, kind, attributes or links. `tracewire::init()` sets it from the sampler it installs.
///
/// With it set, a `#[traced]` call inside an unsampled trace starts no span at all (it runs
/// in the caller's context, which keeps the unsampled decision for everything downstream; its
/// metrics are still recorded), and the HTTP server builds the context of a request whose
/// parent is not sampled itself ([`Tracer::dropped_child`]): the parent's trace id and trace
/// state, a random span id, no SDK span. Its span id is drawn by tracewire, not by the
/// provider's id generator, and it is built even after the provider is shut down (where the SDK
/// would give an invalid context): set this only for a provider whose span ids are random (the
/// SDK's default generator, what `init()` installs). Off by default: other samplers
/// (tracewire's rule sampler among them) may sample the child of an unsampled parent.
pub fn set_parent_based_sampler(parent_based: bool) {
    PARENT_BASED.store(parent_based, Ordering::Relaxed);
}

/// Whether [`set_parent_based_sampler`] said the sampler is parent-based.
pub fn parent_based_sampler() -> bool {
    PARENT_BASED.load(Ordering::Relaxed)
}

/// What the sampler decides for any child of `parent` without looking at the child, when the
/// parent alone decides: `Some(sampled)` when the sampler is parent-based (see
/// [`set_parent_based_sampler`]) and `parent`'s span context is valid, `None` otherwise.
/// `Some(false)`: the child is dropped; `Some(true)`: it records, so the attributes a
/// recording span gets can go in with its builder, in one allocation of the right size.
pub fn parent_decision(parent: &Context) -> Option<bool> {
    use opentelemetry::trace::TraceContextExt as _;
    if !parent_based_sampler() {
        return None;
    }
    let span = parent.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.is_sampled())
}

/// Whether the sampler is known to drop a child of `parent` without looking at the child
/// ([`parent_decision`] is `Some(false)`).
pub fn child_is_dropped(parent: &Context) -> bool {
    parent_decision(parent) == Some(false)
}

/// The tracer of tracewire's scope, from the global tracer provider at the time of the call:
/// see the [module documentation](self).
pub fn tracer() -> Tracer {
    RESOLVED.with(|resolved| resolved.borrow_mut().take());
    let global = opentelemetry::global::tracer_with_scope(crate::scope());
    match RESOLVED.with(|resolved| resolved.borrow_mut().take()) {
        Some(sdk) => Tracer(TracerInner::Sdk(sdk)),
        None => Tracer(TracerInner::Global(Arc::new(global))),
    }
}

/// The tracer returned by [`tracer()`]: the SDK's, or the boxed global one.
#[derive(Clone)]
pub struct Tracer(TracerInner);

#[derive(Clone)]
enum TracerInner {
    Sdk(SdkTracer),
    Global(Arc<BoxedTracer>),
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("sdk", &self.is_sdk())
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// Whether spans are started with the SDK's tracer directly (the global provider was
    /// installed with [`set_tracer_provider`]).
    pub fn is_sdk(&self) -> bool {
        matches!(self.0, TracerInner::Sdk(_))
    }

    /// The context of a child span of `parent` that the sampler drops without looking at it
    /// ([`child_is_dropped`]), when this is the SDK tracer tracewire installed: what the SDK
    /// builds for such a child (the parent's trace id and trace state, a new random span id,
    /// no flags, not remote, not recording), built without an SDK span, so the child costs
    /// no sampler call, no span object and no tracer reference. `None` when the child is not
    /// known to be dropped or the tracer is another provider's: start it through the tracer.
    ///
    /// ```
    /// use opentelemetry::Context;
    /// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    /// use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    /// use tracewire_core::provider;
    ///
    /// provider::set_tracer_provider(SdkTracerProvider::builder()
    ///     .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    ///     .build());
    /// provider::set_parent_based_sampler(true);
    /// let parent = Context::new().with_remote_span_context(SpanContext::new(
    ///     TraceId::from(7), SpanId::from(9), TraceFlags::default(), true, TraceState::NONE));
    /// let child = provider::tracer().dropped_child(&parent).unwrap();
    /// let sc = child.span().span_context().clone();
    /// assert_eq!(sc.trace_id(), TraceId::from(7));
    /// assert!(sc.is_valid() && !sc.is_sampled() && !sc.is_remote());
    /// assert_ne!(sc.span_id(), SpanId::from(9));
    /// assert!(!child.span().is_recording());
    /// ```
    pub fn dropped_child(&self, parent: &Context) -> Option<Context> {
        use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceFlags};
        if !self.is_sdk() || !child_is_dropped(parent) {
            return None;
        }
        let span = parent.span();
        let sc = span.span_context();
        let span_id = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break SpanId::from(id);
            }
        };
        let child = SpanContext::new(
            sc.trace_id(),
            span_id,
            TraceFlags::default(),
            false,
            sc.trace_state().clone(),
        );
        Some(parent.with_remote_span_context(child))
    }
}

impl Tracer {
    /// Starts the span of `builder` as a child of `parent` and returns `parent` with the span
    /// in it, and whether the span records. `attributes` is called only for a recording span,
    /// and what it returns is set on the span before it moves into the context.
    ///
    /// The same as building the span, setting the attributes and
    /// [`with_span`](opentelemetry::trace::TraceContextExt::with_span), with the SDK's span
    /// (several hundred bytes) built and boxed into the context in one place instead of being
    /// moved through a [`Span`] on the way.
    ///
    /// ```
    /// use opentelemetry::{Context, KeyValue};
    /// use opentelemetry::trace::{TraceContextExt as _, Tracer as _};
    /// use opentelemetry_sdk::trace::SdkTracerProvider;
    ///
    /// tracewire_core::provider::set_tracer_provider(SdkTracerProvider::builder().build());
    /// let tracer = tracewire_core::provider::tracer();
    /// let (cx, recording) = tracer.start_in_context(
    ///     tracer.span_builder("demo"),
    ///     &Context::new(),
    ///     || [KeyValue::new("late", true)],
    /// );
    /// assert!(recording && cx.span().is_recording());
    /// cx.span().end();
    /// ```
    pub fn start_in_context<I>(
        &self,
        builder: SpanBuilder,
        parent: &Context,
        attributes: impl FnOnce() -> I,
    ) -> (Context, bool)
    where
        I: IntoIterator<Item = KeyValue>,
    {
        match &self.0 {
            TracerInner::Sdk(tracer) => start_in(tracer, builder, parent, attributes),
            TracerInner::Global(tracer) => start_in(&**tracer, builder, parent, attributes),
        }
    }
}

/// [`Tracer::start_in_context`] with one concrete tracer: its span type is built, set up and
/// boxed into the context without passing through [`Span`].
fn start_in<T, I>(
    tracer: &T,
    builder: SpanBuilder,
    parent: &Context,
    attributes: impl FnOnce() -> I,
) -> (Context, bool)
where
    T: trace::Tracer,
    T::Span: Send + Sync + 'static,
    I: IntoIterator<Item = KeyValue>,
{
    use opentelemetry::trace::Span as _;
    let mut span = tracer.build_with_context(builder, parent);
    let recording = span.is_recording();
    if recording {
        span.set_attributes(attributes());
    }
    (into_context(parent, span, recording), recording)
}

/// `parent` with `span` as its current span, as
/// [`TraceContextExt::with_span`](opentelemetry::trace::TraceContextExt::with_span) gives it,
/// except that a span which does not record (one the sampler dropped) goes in as its span
/// context alone and is dropped at once.
///
/// Such a span records nothing, and its processors never see it, so the two contexts
/// behave the same: the same span context (trace id, span id, flags, trace state, not
/// remote), not recording, every call on it a no-op. But the SDK's dropped span is an object of
/// several hundred bytes that holds a clone of its tracer (the provider's and scope's shared
/// reference counts, which every thread writes), boxed into the context until the context
/// is dropped; its span context alone is neither. tracewire's server, `#[traced]`, HTTP
/// client, messaging and `tracing`-bridge spans go into their contexts through this function.
///
/// ```
/// use opentelemetry::Context;
/// use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
/// use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
///
/// let provider = SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOff).build();
/// let tracer = provider.tracer("demo");
/// let span = tracer.start("dropped");
/// let expected = opentelemetry::trace::Span::span_context(&span).clone();
/// let cx = tracewire_core::provider::context_with_span(&Context::new(), span);
/// assert_eq!(cx.span().span_context(), &expected);
/// assert!(expected.is_valid() && !expected.is_sampled() && !expected.is_remote());
/// assert!(!cx.span().is_recording());
/// ```
pub fn context_with_span<S>(parent: &Context, span: S) -> Context
where
    S: trace::Span + Send + Sync + 'static,
{
    let recording = span.is_recording();
    into_context(parent, span, recording)
}

/// [`context_with_span`] for a span whose `recording` is already known.
fn into_context<S>(parent: &Context, span: S, recording: bool) -> Context
where
    S: trace::Span + Send + Sync + 'static,
{
    use opentelemetry::trace::TraceContextExt as _;
    if recording {
        return parent.with_span(span);
    }
    let dropped = span.span_context().clone();
    drop(span);
    parent.with_remote_span_context(dropped)
}

impl trace::Tracer for Tracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        match &self.0 {
            TracerInner::Sdk(tracer) => Span::Sdk(tracer.build_with_context(builder, parent_cx)),
            TracerInner::Global(tracer) => {
                Span::Global(tracer.build_with_context(builder, parent_cx))
            }
        }
    }
}

/// A span started by a [`Tracer`].
// The SDK's span is large, but it is moved once, into the context's own box: boxing it here
// would bring back the allocation this type exists to save.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Span {
    /// Started by the SDK's tracer.
    Sdk(opentelemetry_sdk::trace::Span),
    /// Started by the boxed global tracer.
    Global(BoxedSpan),
}

macro_rules! each {
    ($self:ident, $span:ident => $body:expr) => {
        match $self {
            Span::Sdk($span) => $body,
            Span::Global($span) => $body,
        }
    };
}

impl trace::Span for Span {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        each!(self, span => span.add_event_with_timestamp(name, timestamp, attributes))
    }

    fn span_context(&self) -> &SpanContext {
        each!(self, span => span.span_context())
    }

    fn is_recording(&self) -> bool {
        each!(self, span => span.is_recording())
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        each!(self, span => span.set_attribute(attribute))
    }

    fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        each!(self, span => span.set_attributes(attributes))
    }

    fn set_status(&mut self, status: Status) {
        each!(self, span => span.set_status(status))
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        each!(self, span => span.update_name(new_name))
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        each!(self, span => span.add_link(span_context, attributes))
    }

    fn end(&mut self) {
        each!(self, span => span.end())
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        each!(self, span => span.end_with_timestamp(timestamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _};
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    #[test]
    fn sdk_tracer_only_for_a_provider_tracewire_installed() {
        let exporter = InMemorySpanExporter::default();
        let ours = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        set_tracer_provider(ours.clone());
        let ours_tracer = tracer();
        assert!(ours_tracer.is_sdk());
        let mut span = ours_tracer.start("direct");
        span.set_attribute(KeyValue::new("k", 1));
        let cx = Context::new().with_span(span);
        cx.span().end();

        // A provider installed around tracewire: used through the boxed global tracer.
        let theirs_exporter = InMemorySpanExporter::default();
        let theirs = SdkTracerProvider::builder()
            .with_simple_exporter(theirs_exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(theirs.clone());
        let theirs_tracer = tracer();
        assert!(!theirs_tracer.is_sdk());
        theirs_tracer.start("boxed").end();

        let ours_spans = exporter.get_finished_spans().unwrap();
        assert_eq!(ours_spans.len(), 1);
        assert_eq!(ours_spans[0].name, "direct");
        assert_eq!(ours_spans[0].attributes, [KeyValue::new("k", 1)]);
        assert_eq!(
            ours_spans[0].instrumentation_scope.name(),
            crate::SCOPE_NAME
        );
        let theirs_spans = theirs_exporter.get_finished_spans().unwrap();
        assert_eq!(theirs_spans.len(), 1);
        assert_eq!(theirs_spans[0].name, "boxed");
        assert_eq!(
            theirs_spans[0].instrumentation_scope.name(),
            crate::SCOPE_NAME
        );
    }
}

#[cfg(test)]
mod dropped_span_tests {
    use super::*;
    use opentelemetry::trace::{
        Link, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
        TracerProvider as _,
    };
    use opentelemetry_sdk::trace::{
        IdGenerator, InMemorySpanExporter, Sampler, SamplingDecision, SamplingResult, ShouldSample,
    };
    use std::sync::atomic::AtomicU64;

    /// Ids counted up from one seed: two providers built with it give the same ids in the
    /// same order.
    #[derive(Debug)]
    struct Counting(AtomicU64);

    impl IdGenerator for Counting {
        fn new_trace_id(&self) -> TraceId {
            TraceId::from(u128::from(self.0.fetch_add(1, Ordering::Relaxed)) << 64 | 0xabc)
        }
        fn new_span_id(&self) -> SpanId {
            SpanId::from(self.0.fetch_add(1, Ordering::Relaxed))
        }
    }

    /// Drops every span and writes a trace-state entry of its own as it does.
    #[derive(Debug, Clone)]
    struct DropWithState;

    impl ShouldSample for DropWithState {
        fn should_sample(
            &self,
            parent: Option<&Context>,
            _: TraceId,
            _: &str,
            _: &SpanKind,
            _: &[KeyValue],
            _: &[Link],
        ) -> SamplingResult {
            let state = parent
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default();
            SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: state.insert("vendor", "dropped").unwrap(),
            }
        }
    }

    fn samplers() -> Vec<(&'static str, Box<dyn ShouldSample>)> {
        vec![
            ("always_off", Box::new(Sampler::AlwaysOff)),
            ("always_on", Box::new(Sampler::AlwaysOn)),
            (
                "parentbased_always_on",
                Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
            ),
            ("ratio_0.5", Box::new(Sampler::TraceIdRatioBased(0.5))),
            ("drop_with_state", Box::new(DropWithState)),
        ]
    }

    fn parents() -> Vec<(&'static str, Context)> {
        let state = TraceState::from_key_value([("a", "1")]).unwrap();
        let remote = |flags| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
                SpanId::from(0x00f0_67aa_0ba9_02b7),
                flags,
                true,
                state.clone(),
            ))
        };
        vec![
            ("root", Context::new()),
            ("unsampled remote parent", remote(TraceFlags::default())),
            ("sampled remote parent", remote(TraceFlags::SAMPLED)),
            (
                "invalid parent",
                Context::new().with_remote_span_context(SpanContext::empty_context()),
            ),
            ("suppressed", Context::new().with_telemetry_suppressed()),
        ]
    }

    /// Every span, dropped or recorded, under every sampler and parent: the context
    /// `start_in` gives (a dropped span as its span context alone) against the SDK's own
    /// `with_span`, on two providers drawing the same ids.
    #[test]
    fn a_span_goes_into_the_context_as_the_sdk_puts_it() {
        let mut dropped = 0;
        let mut recorded = 0;
        for ((name, ours_sampler), (_, theirs_sampler)) in samplers().into_iter().zip(samplers()) {
            let provider = |sampler: Box<dyn ShouldSample>, exporter: &InMemorySpanExporter| {
                SdkTracerProvider::builder()
                    .with_sampler(sampler)
                    .with_id_generator(Counting(AtomicU64::new(1)))
                    .with_simple_exporter(exporter.clone())
                    .build()
            };
            let (ours_out, theirs_out) = (
                InMemorySpanExporter::default(),
                InMemorySpanExporter::default(),
            );
            let ours = provider(ours_sampler, &ours_out).tracer("t");
            let theirs = provider(theirs_sampler, &theirs_out).tracer("t");
            for round in 0..8 {
                for (parent_name, parent) in parents() {
                    let what = format!("{name}, {parent_name}, round {round}");
                    let builder = || {
                        SpanBuilder::from_name("op")
                            .with_kind(SpanKind::Server)
                            .with_attributes([KeyValue::new("early", 1)])
                    };
                    let (cx, recording) =
                        start_in(&ours, builder(), &parent, || [KeyValue::new("late", 2)]);
                    let mut sdk_span = theirs.build_with_context(builder(), &parent);
                    if opentelemetry::trace::Span::is_recording(&sdk_span) {
                        opentelemetry::trace::Span::set_attribute(
                            &mut sdk_span,
                            KeyValue::new("late", 2),
                        );
                    }
                    let sdk_cx = parent.with_span(sdk_span);
                    assert_eq!(
                        cx.span().span_context(),
                        sdk_cx.span().span_context(),
                        "{what}"
                    );
                    assert_eq!(recording, sdk_cx.span().is_recording(), "{what}");
                    assert_eq!(cx.span().is_recording(), recording, "{what}");
                    if recording {
                        recorded += 1;
                    } else {
                        dropped += 1;
                    }
                    cx.span().set_attribute(KeyValue::new("after", 3));
                    sdk_cx.span().set_attribute(KeyValue::new("after", 3));
                    cx.span().end();
                    sdk_cx.span().end();
                }
            }
            let ours_spans = ours_out.get_finished_spans().unwrap();
            let theirs_spans = theirs_out.get_finished_spans().unwrap();
            assert_eq!(ours_spans.len(), theirs_spans.len(), "{name}");
            for (a, b) in ours_spans.iter().zip(&theirs_spans) {
                assert_eq!(a.span_context, b.span_context, "{name}");
                assert_eq!(a.parent_span_id, b.parent_span_id, "{name}");
                assert_eq!(a.attributes, b.attributes, "{name}");
                assert_eq!(
                    a.attributes
                        .iter()
                        .map(|kv| kv.key.as_str())
                        .collect::<Vec<_>>(),
                    ["early", "late", "after"],
                    "{name}"
                );
            }
        }
        // Both kinds were compared, the ratio sampler's among them.
        assert!(
            dropped > 40 && recorded > 40,
            "{dropped} dropped, {recorded} recorded"
        );
    }
}
