//! Runtime support of the `#[traced]` attribute.
//!
//! Every function annotated with `#[traced]` gets one [`CallSite`] in a `static`: its span name,
//! the `code.*` attributes and the metric attributes are `&'static str` values fixed at compile
//! time, and the tracer and instruments are looked up once, on the first call. Each call then
//! starts a span ([`CallSite::start`]) and holds a [`SpanGuard`] that ends it exactly once:
//!
//! - [`SpanGuard::finish`] after the body returned (an `Err` was recorded before with
//!   [`SpanGuard::record_error`]);
//! - in `Drop` otherwise: while a panic unwinds (status Error, `error.type = "panic"`), or
//!   because the future running the body was dropped before completing (the span gets
//!   [`CANCELLED`]` = true`, its status stays unset).
//!
//! Async bodies run inside [`Instrumented`], which attaches the span's context on every poll so
//! nested `#[traced]` calls and `tracing` events inside see it.
//!
//! # Metrics
//!
//! Names and attributes follow the autometrics specification, so its dashboards and alert rules
//! work unchanged:
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `function.calls` | counter | `function`, `module`, `result` (`ok` or `error`) |
//! | `function.calls.duration` | histogram, seconds | `function`, `module` |
//! | `function.calls.concurrent` | up-down counter | `function`, `module` |
//!
//! A call whose future is dropped before completion leaves the in-flight count like every call
//! does, but adds no `function.calls` or duration sample: it has no result.
//!
//! The tracer and the instruments come from the global providers at the time of the first
//! call of each function: install the providers (`tracewire::init()`) before calling
//! instrumented code.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::{
    BoundHistogram, Histogram, ObservableCounter, ObservableGauge, ObservableUpDownCounter,
};
use opentelemetry::trace::{SpanKind, Tracer};
use opentelemetry::{Context, ContextGuard, KeyValue, Value};

use crate::attributes::{CODE_FUNCTION_NAME, CODE_NAMESPACE};
use crate::metrics::StripedCount;
use crate::operation::{EndKind, Ended, Failure, Measure, Operation};

/// Tells `#[traced]` that the tracer provider's sampler is parent-based (`parentbased_*`, the
/// OpenTelemetry default): a call made inside an unsampled trace then starts no span at all —
/// the sampler would drop it anyway — and runs in the caller's context, which keeps the
/// unsampled decision for everything downstream. Calls still count in the metrics.
///
/// The same setting as [`provider::set_parent_based_sampler`](crate::provider::set_parent_based_sampler),
/// which the HTTP server reads too. Off by default, because other samplers may sample the
/// child of an unsampled parent.
pub fn set_skip_unsampled_children(enabled: bool) {
    crate::provider::set_parent_based_sampler(enabled);
}

pub use crate::operation::{CANCELLED, PANIC_ERROR_TYPE};

/// Name of the calls counter.
pub const CALLS: &str = "function.calls";
/// Name of the duration histogram (seconds).
pub const CALLS_DURATION: &str = "function.calls.duration";
/// Name of the in-flight up-down counter.
pub const CALLS_CONCURRENT: &str = "function.calls.concurrent";
/// Attribute of the function metrics: the function's name.
pub const FUNCTION: &str = "function";
/// Attribute of the function metrics: the function's module path.
pub const MODULE: &str = "module";
/// Attribute of `function.calls`: `ok` or `error`.
pub const RESULT: &str = "result";

/// The span kind of a call site, as written in `#[traced(kind = ...)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kind = internal` (the default).
    Internal,
    /// `kind = client`.
    Client,
    /// `kind = server`.
    Server,
    /// `kind = producer`.
    Producer,
    /// `kind = consumer`.
    Consumer,
}

impl Kind {
    fn span_kind(self) -> SpanKind {
        match self {
            Kind::Internal => SpanKind::Internal,
            Kind::Client => SpanKind::Client,
            Kind::Server => SpanKind::Server,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
        }
    }
}

/// The instruments shared by every `#[traced]` function, built once per process.
///
/// Only the duration histogram is recorded per call through the SDK, through a handle bound to
/// the call site's attributes on its first call (no attribute lookup per call). The call
/// counts and the in-flight counts are kept in per-call-site atomics and reported by the
/// observable `function.calls` and `function.calls.concurrent` when the metrics are
/// collected: the exported data is the same (a monotonic sum, an up-down sum), and a call
/// costs two atomic additions instead of three attribute-set lookups.
struct Instruments {
    duration: Histogram<f64>,
    /// Replays the durations held per thread before every collection.
    _flush: ObservableGauge<u64>,
    _calls: ObservableCounter<u64>,
    _concurrent: ObservableUpDownCounter<i64>,
}

/// Every call site with metrics that has been called at least once.
static SITES: Mutex<Vec<&'static SiteMetrics>> = Mutex::new(Vec::new());

fn for_each_site(f: impl Fn(&SiteMetrics)) {
    let sites = SITES.lock().unwrap_or_else(|p| p.into_inner());
    for site in sites.iter() {
        f(site);
    }
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = crate::metrics::meter();
        Instruments {
            _flush: crate::metrics::flush_on_collect(&meter),
            duration: crate::metrics::duration_histogram(
                &meter,
                CALLS_DURATION,
                "Duration of calls of instrumented functions",
            ),
            _calls: meter
                .u64_observable_counter(CALLS)
                .with_unit("{call}")
                .with_description("Calls of instrumented functions, by result")
                .with_callback(|observer| {
                    for_each_site(|site| {
                        for (count, attributes) in
                            [(&site.ok_count, &site.ok), (&site.error_count, &site.error)]
                        {
                            let count = u64::try_from(count.sum()).unwrap_or(0);
                            if count > 0 {
                                observer.observe(count, attributes);
                            }
                        }
                    });
                })
                .build(),
            _concurrent: meter
                .i64_observable_up_down_counter(CALLS_CONCURRENT)
                .with_unit("{call}")
                .with_description("Calls of instrumented functions in flight")
                .with_callback(|observer| {
                    for_each_site(|site| {
                        observer.observe(site.in_flight.sum(), &site.base);
                    });
                })
                .build(),
        }
    })
}

/// What a call site computes on its first call.
struct SiteState {
    tracer: crate::provider::Tracer,
    metrics: Option<&'static SiteMetrics>,
}

struct SiteMetrics {
    /// `function.calls.duration`, bound to `base`.
    duration: BoundHistogram<f64>,
    ok: [KeyValue; 3],
    error: [KeyValue; 3],
    base: [KeyValue; 2],
    /// Per call site, updated by every thread that calls it: striped.
    ok_count: StripedCount,
    error_count: StripedCount,
    in_flight: StripedCount,
}

/// One `#[traced]` function: built by the macro as a `static`, so everything that does not
/// change between calls is computed once.
pub struct CallSite {
    name: &'static str,
    function: &'static str,
    qualified: &'static str,
    module: &'static str,
    kind: Kind,
    metrics: bool,
    state: OnceLock<SiteState>,
}

impl fmt::Debug for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSite")
            .field("name", &self.name)
            .field("function", &self.function)
            .field("qualified", &self.qualified)
            .field("module", &self.module)
            .field("kind", &self.kind)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl CallSite {
    /// A call site: span `name`, function `function` (its bare name, for the metrics),
    /// `qualified` (`module::function`, for `code.function.name`) in `module`.
    pub const fn new(
        name: &'static str,
        function: &'static str,
        qualified: &'static str,
        module: &'static str,
        kind: Kind,
        metrics: bool,
    ) -> Self {
        Self {
            name,
            function,
            qualified,
            module,
            kind,
            metrics,
            state: OnceLock::new(),
        }
    }

    /// The span name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn state(&'static self) -> &'static SiteState {
        self.state.get_or_init(|| SiteState {
            tracer: crate::provider::tracer(),
            metrics: self.metrics.then(|| {
                let function = KeyValue::new(FUNCTION, self.function);
                let module = KeyValue::new(MODULE, self.module);
                let base = [function.clone(), module.clone()];
                let metrics: &'static SiteMetrics = Box::leak(Box::new(SiteMetrics {
                    duration: instruments().duration.bind(&base),
                    ok: [
                        function.clone(),
                        module.clone(),
                        KeyValue::new(RESULT, "ok"),
                    ],
                    error: [
                        function.clone(),
                        module.clone(),
                        KeyValue::new(RESULT, "error"),
                    ],
                    base,
                    ok_count: StripedCount::new(),
                    error_count: StripedCount::new(),
                    in_flight: StripedCount::new(),
                }));
                // One allocation per call site for the life of the process, so the
                // collection callbacks can read it.
                SITES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(metrics);
                metrics
            }),
        })
    }

    /// Starts the span of one call as a child of the current context, and counts the call in
    /// flight. The returned guard ends both.
    pub fn start(&'static self) -> SpanGuard {
        let state = self.state();
        if let Some(m) = state.metrics {
            m.in_flight.add(1);
        }
        // With a parent-based sampler, the parent alone decides: inside an unsampled trace no
        // span is started.
        if crate::provider::parent_based_sampler()
            && Context::map_current(crate::provider::child_is_dropped)
        {
            return SpanGuard {
                call: Call::Unspanned {
                    metrics: state.metrics.map(|m| (m, Instant::now())),
                    failed: false,
                },
                site: self,
            };
        }
        // The code attributes go in with the builder, in one allocation of their exact size:
        // the sampler sees them whatever it decides, and a recording span takes the vector as
        // it is instead of growing its own one attribute at a time. A span the sampler drops
        // frees it unread.
        let mut builder = state
            .tracer
            .span_builder(Cow::Borrowed(self.name))
            .with_kind(self.kind.span_kind());
        builder.attributes = Some(self.code_attributes().into());
        // One clock reading at the start: the span's start time and the duration's start.
        // Without metrics, the SDK reads the clock itself, and only for a recording span.
        let start = state.metrics.is_some().then(SystemTime::now);
        builder.start_time = start;
        let (cx, recording) = Context::map_current(|parent| {
            state
                .tracer
                .start_in_context(builder, parent, || None::<KeyValue>)
        });
        let measure = CallMetrics {
            metrics: state.metrics,
        };
        SpanGuard {
            call: Call::Span(Operation::recording_from(cx, measure, start, recording)),
            site: self,
        }
    }

    fn code_attributes(&self) -> [KeyValue; 2] {
        [
            KeyValue::new(CODE_FUNCTION_NAME, self.qualified),
            KeyValue::new(CODE_NAMESPACE, self.module),
        ]
    }
}

/// Records a call's metrics when it ends: duration and result counts for calls that
/// returned, only the in-flight count for cancelled ones (they have no result).
fn record_call(m: &'static SiteMetrics, kind: EndKind, elapsed: impl FnOnce() -> Duration) {
    m.in_flight.add(-1);
    match kind {
        EndKind::Ok => m.ok_count.add(1),
        EndKind::Error | EndKind::Panicked => m.error_count.add(1),
        EndKind::Cancelled => return,
    };
    // Through the thread's buffer: threads calling the same function record the same set.
    crate::metrics::record_deferred(&m.duration, elapsed().as_secs_f64());
}

/// The metrics of a call with a span, recorded when its [`Operation`] ends.
struct CallMetrics {
    metrics: Option<&'static SiteMetrics>,
}

impl Measure for CallMetrics {
    fn record(&mut self, ended: &Ended<'_>) {
        if let Some(m) = self.metrics {
            record_call(m, ended.kind, || ended.elapsed);
        }
    }

    fn needs_elapsed(&self) -> bool {
        self.metrics.is_some()
    }
}

/// How one call is recorded.
enum Call {
    /// With a span (and the metrics, when on): an operation that ends once.
    Span(Operation<CallMetrics>),
    /// Without a span (inside an unsampled trace, under a parent-based sampler): only the
    /// metrics, when on, from the instant the call started.
    Unspanned {
        metrics: Option<(&'static SiteMetrics, Instant)>,
        failed: bool,
    },
    /// Ended.
    Ended,
}

impl Call {
    /// Ends the call, once: `kind` unless it was recorded as failed.
    fn end(&mut self, kind: EndKind) {
        match std::mem::replace(self, Call::Ended) {
            Call::Span(op) => match kind {
                EndKind::Panicked => op.end_panicked(),
                // The operation tells an error from an ok by its recorded failure.
                EndKind::Ok | EndKind::Error => op.end(),
                // Dropped unfinished: the operation's own drop records the cancellation.
                EndKind::Cancelled => drop(op),
            },
            Call::Unspanned {
                metrics: Some((m, start)),
                failed,
            } => {
                let kind = match kind {
                    EndKind::Ok if failed => EndKind::Error,
                    kind => kind,
                };
                record_call(m, kind, || start.elapsed());
            }
            Call::Unspanned { metrics: None, .. } | Call::Ended => {}
        }
    }
}

/// The span of one call of a `#[traced]` function: an [`Operation`] that ends exactly once, in
/// [`finish`](Self::finish), or in `Drop` (panic or cancellation).
pub struct SpanGuard {
    call: Call,
    site: &'static CallSite,
}

impl fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operation = match &self.call {
            Call::Span(op) => Some(op),
            _ => None,
        };
        f.debug_struct("SpanGuard")
            .field("site", &self.site.name)
            .field("operation", &operation)
            .finish_non_exhaustive()
    }
}

impl SpanGuard {
    fn op(&self) -> Option<&Operation<CallMetrics>> {
        match &self.call {
            Call::Span(op) => Some(op),
            _ => None,
        }
    }

    /// Whether this call records nothing at all, however it ends: no span was started (see
    /// [`set_skip_unsampled_children`]) and the call site has no metrics. An async body then
    /// runs as it is, without the per-poll wrapper.
    pub fn is_idle(&self) -> bool {
        matches!(self.call, Call::Unspanned { metrics: None, .. })
    }

    /// Whether the span records attributes (it was sampled): `fields(...)` are evaluated only
    /// then.
    pub fn is_recording(&self) -> bool {
        self.op().is_some_and(Operation::is_recording)
    }

    /// The context holding this call's span (`None` when no span was started, see
    /// [`set_skip_unsampled_children`]).
    pub fn context(&self) -> Option<&Context> {
        self.op().and_then(Operation::context)
    }

    /// Sets attributes on the span (no-op when it is not recording).
    pub fn set_attributes<I: IntoIterator<Item = KeyValue>>(&self, attributes: I) {
        if let Some(op) = self.op() {
            op.set_attributes(attributes);
        }
    }

    /// Attaches the span's context to the current thread until the returned guard is dropped
    /// (synchronous bodies).
    pub fn enter(&self) -> Option<ContextGuard> {
        self.context().map(|cx| cx.clone().attach())
    }

    /// Records that the call returned an error: status Error with `message`, `error.type` and
    /// an `exception` event.
    pub fn record_error(&mut self, error_type: &'static str, message: Option<String>) {
        match &mut self.call {
            Call::Span(op) => {
                op.fail(Failure::exception(error_type, message.unwrap_or_default()));
            }
            Call::Unspanned { failed, .. } => *failed = true,
            Call::Ended => {}
        }
    }

    /// Ends the span after the body returned (as an error when
    /// [`record_error`](Self::record_error) was called).
    pub fn finish(mut self) {
        self.call.end(EndKind::Ok);
    }

    fn mark_panicked(&mut self) {
        self.call.end(EndKind::Panicked);
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if matches!(self.call, Call::Ended) {
            return;
        }
        let kind = if std::thread::panicking() {
            EndKind::Panicked
        } else {
            EndKind::Cancelled
        };
        self.call.end(kind);
    }
}

pin_project_lite::pin_project! {
    /// The future of an async `#[traced]` body: attaches the span's context on every poll and
    /// resolves to the body's output together with the [`SpanGuard`], so the caller can record
    /// the result before the span ends. Dropped before completion, it ends the span as
    /// cancelled.
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        guard: Option<SpanGuard>,
    }
}

impl<F> fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Instrumented<F> {
    /// Runs `inner` under `guard`'s span.
    pub fn new(inner: F, guard: SpanGuard) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

/// Marks the guard as panicked when a poll of the body unwinds, whoever drops the future later.
struct PanicSentinel<'a>(&'a mut Option<SpanGuard>);

impl Drop for PanicSentinel<'_> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(guard) = self.0.as_mut()
        {
            guard.mark_panicked();
        }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = (F::Output, SpanGuard);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(guard) = this.guard.as_ref() else {
            // Polled after completion: there is nothing left to run.
            return Poll::Pending;
        };
        let _attached = guard.enter();
        let sentinel = PanicSentinel(this.guard);
        let output = match this.inner.poll(cx) {
            Poll::Ready(output) => output,
            Poll::Pending => return Poll::Pending,
        };
        match sentinel.0.take() {
            Some(guard) => Poll::Ready((output, guard)),
            None => Poll::Pending,
        }
    }
}

/// The short type name of an error value, for `error.type`.
pub fn error_type<E: ?Sized>(_: &E) -> &'static str {
    crate::error::short_type_name::<E>()
}

/// Borrowed error value; the `Via*` traits pick its message by what it implements (`Display`,
/// else `Debug`, else nothing) through method resolution on `&&&ErrorRef(e)`.
#[derive(Debug)]
pub struct ErrorRef<'a, E: ?Sized>(pub &'a E);

/// Message of an error implementing `Display`.
pub trait ViaDisplay {
    /// The message.
    fn tracewire_message(&self) -> Option<String>;
}

impl<E: fmt::Display + ?Sized> ViaDisplay for &&ErrorRef<'_, E> {
    fn tracewire_message(&self) -> Option<String> {
        Some(self.0.to_string())
    }
}

/// Message of an error implementing only `Debug`.
pub trait ViaDebug {
    /// The message.
    fn tracewire_message(&self) -> Option<String>;
}

impl<E: fmt::Debug + ?Sized> ViaDebug for &ErrorRef<'_, E> {
    fn tracewire_message(&self) -> Option<String> {
        Some(format!("{:?}", self.0))
    }
}

/// No message for an error implementing neither `Display` nor `Debug`.
pub trait ViaNothing {
    /// `None`.
    fn tracewire_message(&self) -> Option<String>;
}

impl<E: ?Sized> ViaNothing for ErrorRef<'_, E> {
    fn tracewire_message(&self) -> Option<String> {
        None
    }
}

/// A value `#[traced(fields(key = value))]` can record as a span attribute.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded as a span field",
    label = "not an integer, float, bool or string",
    note = "record a text form instead, e.g. `field = value.to_string()`"
)]
pub trait FieldValue {
    /// The attribute value.
    fn to_field_value(&self) -> Value;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn to_field_value(&self) -> Value {
                Value::I64(i64::from(*self))
            }
        }
    )*};
}
int_field!(i8, i16, i32, i64, u8, u16, u32);

macro_rules! wide_int_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn to_field_value(&self) -> Value {
                match i64::try_from(*self) {
                    Ok(v) => Value::I64(v),
                    Err(_) => Value::from(self.to_string()),
                }
            }
        }
    )*};
}
wide_int_field!(u64, usize, isize, i128, u128);

impl FieldValue for f64 {
    fn to_field_value(&self) -> Value {
        Value::F64(*self)
    }
}

impl FieldValue for f32 {
    fn to_field_value(&self) -> Value {
        Value::F64(f64::from(*self))
    }
}

impl FieldValue for bool {
    fn to_field_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl FieldValue for str {
    fn to_field_value(&self) -> Value {
        Value::from(self.to_owned())
    }
}

impl FieldValue for String {
    fn to_field_value(&self) -> Value {
        Value::from(self.clone())
    }
}

impl FieldValue for Cow<'_, str> {
    fn to_field_value(&self) -> Value {
        Value::from(self.clone().into_owned())
    }
}

impl FieldValue for std::sync::Arc<str> {
    fn to_field_value(&self) -> Value {
        Value::from(self.clone())
    }
}

impl FieldValue for Value {
    fn to_field_value(&self) -> Value {
        self.clone()
    }
}

impl<T: FieldValue + ?Sized> FieldValue for &T {
    fn to_field_value(&self) -> Value {
        (**self).to_field_value()
    }
}

impl<T: FieldValue + ?Sized> FieldValue for &mut T {
    fn to_field_value(&self) -> Value {
        (**self).to_field_value()
    }
}

impl<T: FieldValue + ?Sized> FieldValue for Box<T> {
    fn to_field_value(&self) -> Value {
        (**self).to_field_value()
    }
}

/// The attribute value of a `fields(...)` entry.
pub fn field_value<T: FieldValue + ?Sized>(value: &T) -> Value {
    value.to_field_value()
}
