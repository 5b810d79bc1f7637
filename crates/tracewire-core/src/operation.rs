//! One instrumented operation — an HTTP request, an outgoing call, a publish, the processing of
//! a message, a `#[traced]` call — and the one way it ends.
//!
//! An [`Operation`] owns the context holding its span, its start instant and whatever records
//! its metrics (a [`Measure`]). It ends exactly once, in one of four ways:
//!
//! | ending | how | span | `error.type` | metrics |
//! |---|---|---|---|---|
//! | ok | [`Operation::end`] without a failure | status unset | — | recorded |
//! | error | [`Operation::fail`] then [`Operation::end`] | status Error (message) | the failure's type | recorded with `error.type` |
//! | panic | dropped while the thread panics | status Error `panicked` | `panic` | recorded with `error.type` |
//! | cancelled | dropped otherwise | `tracewire.cancelled = true`, status unset | `cancelled` | recorded with `error.type` |
//!
//! A failure that carries an exception (an error value with a message) also adds an
//! `exception` event (`exception.type`, `exception.message`) when it is recorded; a failure
//! classified from a status code (an HTTP 503, a gRPC status) sets only `error.type` and the
//! status.
//!
//! Transports start the span (they know its name, kind, parent and links), add their
//! attributes, and run their own settle step (ack, commit, access log) from their [`Measure`];
//! the ending itself is written here only.
//!
//! ```
//! use opentelemetry::{Context, KeyValue, trace::{TraceContextExt, Tracer}};
//! use tracewire_core::operation::{Failure, Operation, Timed};
//!
//! let tracer = tracewire_core::tracer();
//! let meter = tracewire_core::metrics::meter();
//! let histogram = tracewire_core::metrics::duration_histogram(&meter, "demo.duration", "Demo");
//! let span = tracer.start("demo");
//! let mut op = Operation::new(Context::current_with_span(span), Timed::new(histogram, vec![]));
//! op.fail(Failure::exception("DbError", "connection refused"));
//! op.end(); // status Error, error.type = DbError, one `exception` event, one duration sample
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use crate::attributes::{ERROR_TYPE, EXCEPTION_EVENT, EXCEPTION_MESSAGE, EXCEPTION_TYPE};

/// Set to `true` on the span of an operation dropped before it completed.
pub const CANCELLED: &str = "tracewire.cancelled";

/// `error.type` of an operation that panicked.
pub const PANIC_ERROR_TYPE: &str = "panic";

/// `error.type` of an operation dropped before it completed.
pub const CANCELLED_ERROR_TYPE: &str = "cancelled";

/// Why an operation failed: its `error.type` (low cardinality) and, for an error value, the
/// message that becomes the span status description and an `exception` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    error_type: Cow<'static, str>,
    message: Option<String>,
}

impl Failure {
    /// A failure classified from a status (HTTP 5xx, a gRPC code): `error.type` and status
    /// Error with an empty description, no `exception` event.
    pub fn status(error_type: impl Into<Cow<'static, str>>) -> Self {
        Self {
            error_type: error_type.into(),
            message: None,
        }
    }

    /// A failure caused by an error value: `error.type`, status Error with `message`, and an
    /// `exception` event.
    pub fn exception(error_type: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: Some(message.into()),
        }
    }

    /// A failure from an error value: `error.type` is its short type name
    /// ([`short_type_name`](crate::error::short_type_name)), the message its `Display`.
    pub fn from_error<E: fmt::Display + ?Sized>(error: &E) -> Self {
        Self::exception(crate::error::short_type_name::<E>(), error.to_string())
    }

    /// The `error.type`.
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The message, for failures caused by an error value.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// Completed without a failure.
    Ok,
    /// Completed with a recorded [`Failure`].
    Error,
    /// Dropped while its thread was panicking.
    Panicked,
    /// Dropped before it completed, without a panic.
    Cancelled,
}

/// What a [`Measure`] is told when its operation ends.
#[derive(Debug, Clone, Copy)]
pub struct Ended<'a> {
    /// How the operation ended.
    pub kind: EndKind,
    /// Its `error.type` (`panic` and `cancelled` for those endings), `None` when it succeeded.
    pub error_type: Option<&'a str>,
    /// The time from the operation's start to its end.
    pub elapsed: Duration,
    /// The context holding the operation's span (still open): attach it to log in the
    /// operation's trace.
    pub context: &'a Context,
}

/// What an operation records when it ends, besides its span: duration histograms, counters,
/// an access-log line, in-flight gauges.
pub trait Measure {
    /// Called exactly once, just before the span ends.
    fn record(&mut self, ended: &Ended<'_>);

    /// Whether [`record`](Self::record) reads [`Ended::elapsed`]. An operation without a
    /// recording span whose measure says `false` reads no clock at all (its `elapsed` is
    /// zero).
    fn needs_elapsed(&self) -> bool {
        true
    }
}

impl Measure for () {
    fn record(&mut self, _: &Ended<'_>) {}

    fn needs_elapsed(&self) -> bool {
        false
    }
}

/// The usual [`Measure`]: one duration histogram (and optionally one counter) recorded with the
/// operation's metric attributes, plus `error.type` when it failed.
#[derive(Clone)]
pub struct Timed {
    duration: Histogram<f64>,
    counter: Option<(Counter<u64>, u64)>,
    attributes: Vec<KeyValue>,
}

impl fmt::Debug for Timed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timed")
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

impl Timed {
    /// Records `duration` (seconds) with `attributes`.
    pub fn new(duration: Histogram<f64>, attributes: Vec<KeyValue>) -> Self {
        Self {
            duration,
            counter: None,
            attributes,
        }
    }

    /// Also adds `count` to `counter`, with the same attributes, when the operation ends
    /// (however it ends: an attempted send counts even when it fails).
    pub fn counting(mut self, counter: Counter<u64>, count: u64) -> Self {
        self.counter = Some((counter, count));
        self
    }

    /// Adds a metric attribute (known only after the start, e.g. a status code).
    pub fn push(&mut self, attribute: KeyValue) {
        self.attributes.push(attribute);
    }

    /// The metric attributes so far.
    pub fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
}

impl Measure for Timed {
    fn record(&mut self, ended: &Ended<'_>) {
        if let Some(error_type) = ended.error_type {
            self.attributes
                .push(KeyValue::new(ERROR_TYPE, error_type.to_owned()));
        }
        self.duration
            .record(ended.elapsed.as_secs_f64(), &self.attributes);
        if let Some((counter, count)) = &self.counter {
            counter.add(*count, &self.attributes);
        }
    }
}

/// When an operation started, on the clock its end is read from.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The monotonic clock; the span keeps the SDK's own timestamps.
    Monotonic(Instant),
    /// The wall clock the span was started with (`SpanBuilder::with_start_time`): the end is
    /// read once and serves both the span's end timestamp and the duration.
    Wall(SystemTime),
    /// Nothing needed a clock (no recording span, a measure without durations).
    None,
}

/// One instrumented operation. See the [module documentation](self).
pub struct Operation<M: Measure = Timed> {
    /// The context holding the operation's span; `None` when no span was started (an
    /// unsampled parent whose children are skipped): the metrics are still recorded.
    cx: Option<Context>,
    recording: bool,
    start: Start,
    failure: Option<Failure>,
    measure: M,
    ended: bool,
}

impl<M: Measure> fmt::Debug for Operation<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field(
                "span_context",
                &self.cx.as_ref().map(|cx| cx.span().span_context().clone()),
            )
            .field("start", &self.start)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl<M: Measure> Operation<M> {
    /// An operation whose span is the current span of `cx` (started by the caller), starting
    /// now. When `measure` takes no duration ([`Measure::needs_elapsed`]), no clock is read
    /// here: the SDK reads its own for a recording span.
    pub fn new(cx: Context, measure: M) -> Self {
        let start = if measure.needs_elapsed() {
            Start::Monotonic(Instant::now())
        } else {
            Start::None
        };
        Self::with_start(cx, measure, start)
    }

    /// An operation that started at `start` (taken before the span was built).
    pub fn started_at(cx: Context, measure: M, start: Instant) -> Self {
        Self::with_start(cx, measure, Start::Monotonic(start))
    }

    /// An operation whose span was started with `SpanBuilder::with_start_time(start)`.
    ///
    /// The clock is read once at each end: `start` is the span's start timestamp and the
    /// start of the duration, and the one reading at the end is the span's end timestamp
    /// (`end_with_timestamp`) and the end of the duration. Durations come from the wall clock
    /// then, like the SDK's span durations (a clock stepped back mid-operation counts as
    /// zero).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use opentelemetry::{Context, trace::{TraceContextExt, Tracer}};
    /// use tracewire_core::operation::Operation;
    ///
    /// let tracer = tracewire_core::tracer();
    /// let start = SystemTime::now();
    /// let span = tracer.span_builder("demo").with_start_time(start).start(&tracer);
    /// let op = Operation::started_at_time(Context::current_with_span(span), (), start);
    /// op.end();
    /// ```
    pub fn started_at_time(cx: Context, measure: M, start: SystemTime) -> Self {
        Self::with_start(cx, measure, Start::Wall(start))
    }

    fn with_start(cx: Context, measure: M, start: Start) -> Self {
        let recording = cx.span().is_recording();
        Self::with_recording(cx, measure, start, recording)
    }

    /// An operation whose caller knows whether its span records (it asked the span before
    /// moving it into `cx`, where asking takes the span's lock).
    pub(crate) fn recording_from(
        cx: Context,
        measure: M,
        start: Option<SystemTime>,
        recording: bool,
    ) -> Self {
        let start = match start {
            Some(start) => Start::Wall(start),
            None if measure.needs_elapsed() => Start::Monotonic(Instant::now()),
            None => Start::None,
        };
        Self::with_recording(cx, measure, start, recording)
    }

    fn with_recording(cx: Context, measure: M, start: Start, recording: bool) -> Self {
        Self {
            cx: Some(cx),
            recording,
            start,
            failure: None,
            measure,
            ended: false,
        }
    }

    /// An operation with no span of its own: only its metrics are recorded (no clock is
    /// read when its measure takes no duration).
    pub fn without_span(measure: M) -> Self {
        let start = if measure.needs_elapsed() {
            Start::Monotonic(Instant::now())
        } else {
            Start::None
        };
        Self {
            cx: None,
            recording: false,
            start,
            failure: None,
            measure,
            ended: false,
        }
    }

    /// The context holding the span (`None` for [`without_span`](Self::without_span)):
    /// attach it while the operation's work runs, inject it into outgoing headers.
    pub fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

    /// Whether the span records attributes (it was sampled).
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// When the operation started, on the monotonic clock (for an operation started on the
    /// wall clock, [`started_at_time`](Self::started_at_time), derived from the time elapsed
    /// since; for an operation that read no clock, now).
    pub fn start(&self) -> Instant {
        match self.start {
            Start::Monotonic(start) => start,
            Start::Wall(start) => {
                let now = Instant::now();
                let elapsed = SystemTime::now().duration_since(start).unwrap_or_default();
                now.checked_sub(elapsed).unwrap_or(now)
            }
            Start::None => Instant::now(),
        }
    }

    /// The metrics recorder, to add attributes known after the start.
    pub fn measure_mut(&mut self) -> &mut M {
        &mut self.measure
    }

    /// Sets one span attribute (nothing when the span is not recording).
    pub fn set_attribute(&self, attribute: KeyValue) {
        if let (true, Some(cx)) = (self.recording, &self.cx) {
            cx.span().set_attribute(attribute);
        }
    }

    /// Sets span attributes (nothing when the span is not recording).
    pub fn set_attributes<I: IntoIterator<Item = KeyValue>>(&self, attributes: I) {
        if let (true, Some(cx)) = (self.recording, &self.cx) {
            cx.span().set_attributes(attributes);
        }
    }

    /// Records a failure. A failure with a message adds its `exception` event now; the
    /// latest failure decides `error.type` and the status when the operation ends.
    pub fn fail(&mut self, failure: Failure) {
        if let (true, Some(cx), Some(message)) = (self.recording, &self.cx, &failure.message) {
            cx.span().add_event(
                EXCEPTION_EVENT,
                vec![
                    KeyValue::new(EXCEPTION_TYPE, failure.error_type.clone()),
                    KeyValue::new(EXCEPTION_MESSAGE, message.clone()),
                ],
            );
        }
        self.failure = Some(failure);
    }

    /// The failure recorded so far.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Ends the operation: as an error when a failure was recorded, ok otherwise.
    pub fn end(mut self) {
        let kind = if self.failure.is_some() {
            EndKind::Error
        } else {
            EndKind::Ok
        };
        self.finish(kind);
    }

    /// Records `result`'s failure, if any, and ends the operation.
    pub fn end_with(mut self, result: Result<(), Failure>) {
        if let Err(failure) = result {
            self.fail(failure);
        }
        self.end();
    }

    fn finish(&mut self, kind: EndKind) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        // One clock reading for the end of both the span and the duration.
        let (elapsed, end_time) = match self.start {
            Start::Monotonic(start) => (start.elapsed(), None),
            Start::Wall(start) => {
                let now = SystemTime::now();
                (now.duration_since(start).unwrap_or_default(), Some(now))
            }
            Start::None => (Duration::ZERO, None),
        };
        let error_type: Option<Cow<'static, str>> = match kind {
            EndKind::Ok => None,
            EndKind::Error => self.failure.as_ref().map(|f| f.error_type.clone()),
            EndKind::Panicked => Some(Cow::Borrowed(PANIC_ERROR_TYPE)),
            EndKind::Cancelled => Some(Cow::Borrowed(CANCELLED_ERROR_TYPE)),
        };
        let span = self
            .cx
            .as_ref()
            .filter(|_| self.recording)
            .map(|cx| cx.span());
        if let Some(span) = &span {
            if let Some(error_type) = &error_type {
                span.set_attribute(KeyValue::new(ERROR_TYPE, error_type.clone()));
            }
            match kind {
                EndKind::Ok => {}
                EndKind::Error => {
                    let description = self
                        .failure
                        .as_mut()
                        .and_then(|f| f.message.take())
                        .unwrap_or_default();
                    span.set_status(Status::error(description));
                }
                EndKind::Panicked => span.set_status(Status::error("panicked")),
                EndKind::Cancelled => span.set_attribute(KeyValue::new(CANCELLED, true)),
            }
        }
        let empty = Context::new();
        self.measure.record(&Ended {
            kind,
            error_type: error_type.as_deref(),
            elapsed,
            context: self.cx.as_ref().unwrap_or(&empty),
        });
        if let Some(span) = span {
            match end_time {
                Some(now) => span.end_with_timestamp(now),
                None => span.end(),
            }
        }
    }
}

impl<M: Measure> Drop for Operation<M> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let kind = if std::thread::panicking() {
            EndKind::Panicked
        } else {
            EndKind::Cancelled
        };
        self.finish(kind);
    }
}

impl<M: Measure> Operation<M> {
    /// Marks the operation as ended by a panic now (a poll unwound), whoever drops it later.
    pub fn end_panicked(mut self) {
        self.finish(EndKind::Panicked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    struct Count<'a>(
        &'a std::cell::Cell<u32>,
        &'a std::cell::RefCell<Vec<EndKind>>,
    );

    impl Measure for Count<'_> {
        fn record(&mut self, ended: &Ended<'_>) {
            self.0.set(self.0.get() + 1);
            self.1.borrow_mut().push(ended.kind);
        }
    }

    fn provider() -> (SdkTracerProvider, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        (provider, exporter)
    }

    #[test]
    fn ends_exactly_once_in_each_way() {
        let (provider, exporter) = provider();
        let tracer = provider.tracer("t");
        let calls = std::cell::Cell::new(0);
        let kinds = std::cell::RefCell::new(Vec::new());

        let op = Operation::new(
            Context::new().with_span(tracer.start("ok")),
            Count(&calls, &kinds),
        );
        op.end();

        let mut op = Operation::new(
            Context::new().with_span(tracer.start("error")),
            Count(&calls, &kinds),
        );
        op.fail(Failure::status("503"));
        op.fail(Failure::exception("DbError", "down"));
        op.end();

        drop(Operation::new(
            Context::new().with_span(tracer.start("cancelled")),
            Count(&calls, &kinds),
        ));

        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _op = Operation::new(
                Context::new().with_span(tracer.start("panicked")),
                Count(&calls, &kinds),
            );
            panic!("boom");
        }));
        assert!(caught.is_err());

        assert_eq!(calls.get(), 4);
        assert_eq!(
            *kinds.borrow(),
            [
                EndKind::Ok,
                EndKind::Error,
                EndKind::Cancelled,
                EndKind::Panicked
            ]
        );
        let spans = exporter.get_finished_spans().unwrap();
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap().clone();
        let attr = |s: &opentelemetry_sdk::trace::SpanData, k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(spans.len(), 4);
        let ok = by_name("ok");
        assert_eq!(ok.status, Status::Unset);
        assert_eq!(attr(&ok, ERROR_TYPE), None);
        let error = by_name("error");
        assert_eq!(error.status, Status::error("down"));
        assert_eq!(attr(&error, ERROR_TYPE).as_deref(), Some("DbError"));
        assert_eq!(error.events.len(), 1);
        assert_eq!(error.events[0].name, EXCEPTION_EVENT);
        let cancelled = by_name("cancelled");
        assert_eq!(cancelled.status, Status::Unset);
        assert_eq!(attr(&cancelled, CANCELLED).as_deref(), Some("true"));
        assert_eq!(attr(&cancelled, ERROR_TYPE).as_deref(), Some("cancelled"));
        let panicked = by_name("panicked");
        assert_eq!(panicked.status, Status::error("panicked"));
        assert_eq!(attr(&panicked, ERROR_TYPE).as_deref(), Some("panic"));
    }
}
