//! Feeding the ring from this process: a span processor and a `tracing` layer hand what they
//! see to one background thread over a bounded channel. Nothing on the request path waits:
//! a full channel drops the item and counts it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tracewire_core::redact::SensitiveHeaders;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{self, Layer};

use crate::model::{Kind, LogRecord, SpanEvent, SpanLink, SpanRecord, StatusCode};
use crate::service::{DroppedCount, ViewService};
use crate::store::{Limits, Store};

/// Items the hand-off channel holds at most (spans and log lines together).
pub const DEFAULT_CHANNEL_CAPACITY: usize = 2_048;

/// Items the background thread moves into the store per lock.
const BATCH: usize = 512;

/// How long the background thread sleeps when the hand-off is empty.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

// Spans are the bulk of what goes through the channel, and its slots are as large as the
// largest variant either way: boxing the span would add an allocation per span for nothing.
#[allow(clippy::large_enum_variant)]
enum Item {
    Span(SpanData),
    Log(PendingLog),
}

/// A log line as the request thread hands it over: ids as numbers and names as the static
/// strings `tracing` gives, turned into a [`LogRecord`] on the view's thread.
struct PendingLog {
    trace_id: opentelemetry::trace::TraceId,
    span_id: opentelemetry::trace::SpanId,
    time: SystemTime,
    level: &'static str,
    target: &'static str,
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl PendingLog {
    fn into_record(self) -> LogRecord {
        LogRecord {
            trace_id: self.trace_id.to_string(),
            span_id: self.span_id.to_string(),
            time_unix_nano: unix_nano(self.time),
            level: self.level.to_owned(),
            target: self.target.to_owned(),
            message: self.message,
            fields: self
                .fields
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }
}

struct Shared {
    enabled: AtomicBool,
    dropped: AtomicU64,
    service: String,
    sensitive: SensitiveHeaders,
}

/// The in-process feed of the view: hand [`Recorder::processor`] to the tracer provider and
/// [`Recorder::log_layer`] to the `tracing` subscriber; serve [`Recorder::service`].
///
/// Off until [`Recorder::enable`] (which [`Recorder::service`] calls): until then the
/// processor and the layer return at once.
///
/// ```
/// use opentelemetry::trace::{Tracer, TracerProvider};
/// use tracewire_view::{Limits, Recorder};
///
/// let recorder = Recorder::new("checkout", Limits::default());
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_span_processor(recorder.processor())
///     .build();
/// let service = recorder.service("/_tracewire"); // enables recording
/// provider.tracer("demo").in_span("GET /orders/{id}", |_| {});
/// recorder.sync();
/// assert_eq!(recorder.store().stats().spans, 1);
/// ```
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    tx: SyncSender<Item>,
    store: Store,
    flushed: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    sent: Arc<AtomicU64>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("service", &self.shared.service)
            .field("enabled", &self.shared.enabled.load(Ordering::Relaxed))
            .field("dropped", &self.dropped())
            .field("store", &self.store)
            .finish()
    }
}

impl Recorder {
    /// A recorder for spans of `service` (the resource's `service.name`), kept within
    /// `limits`, with a hand-off of [`DEFAULT_CHANNEL_CAPACITY`] items.
    pub fn new(service: impl Into<String>, limits: Limits) -> Self {
        Self::with_capacity(service, limits, DEFAULT_CHANNEL_CAPACITY)
    }

    /// As [`Recorder::new`] with a hand-off of `capacity` items.
    pub fn with_capacity(service: impl Into<String>, limits: Limits, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            enabled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            service: service.into(),
            sensitive: SensitiveHeaders::default(),
        });
        let store = Store::new(limits);
        let flushed = Arc::new((std::sync::Mutex::new(0u64), std::sync::Condvar::new()));
        let drain = Drain {
            rx,
            store: store.clone(),
            service: shared.service.clone(),
            flushed: flushed.clone(),
        };
        // Without a thread nothing drains: every item then counts as dropped.
        let _ = std::thread::Builder::new()
            .name("tracewire-view".into())
            .spawn(move || drain.run());
        Self {
            shared,
            tx,
            store,
            flushed,
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Field names whose values log lines show redacted (default: the sensitive headers),
    /// as the JSON log layer does.
    pub fn with_sensitive_fields(mut self, sensitive: SensitiveHeaders) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.sensitive = sensitive;
        }
        self
    }

    /// Starts recording.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether recording is on.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// The span processor to add to the tracer provider (alongside the exporting one).
    pub fn processor(&self) -> ViewProcessor {
        ViewProcessor {
            recorder: self.clone(),
        }
    }

    /// The `tracing` layer capturing log lines written while a span is current.
    pub fn log_layer(&self) -> ViewLogLayer {
        ViewLogLayer {
            recorder: self.clone(),
        }
    }

    /// The ring this recorder fills.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Spans and log lines dropped because the hand-off was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Enables recording and returns the pages, for mounting under `base` (`/_tracewire`).
    pub fn service(&self, base: &str) -> ViewService {
        self.enable();
        ViewService::new(self.store.clone(), base)
            .with_title(&self.shared.service)
            .with_dropped(self.shared.clone() as Arc<dyn DroppedCount>)
    }

    /// Waits (up to a second) until everything handed off so far is in the store.
    pub fn sync(&self) {
        let target = self.sent.load(Ordering::Acquire);
        let (lock, cvar) = &*self.flushed;
        let Ok(mut done) = lock.lock() else { return };
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while *done < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match cvar.wait_timeout(done, left) {
                Ok((guard, _)) => done = guard,
                Err(_) => return,
            }
        }
    }

    fn send(&self, item: Item) {
        match self.tx.try_send(item) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl DroppedCount for Shared {
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Drain {
    rx: Receiver<Item>,
    store: Store,
    service: String,
    flushed: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
}

impl Drain {
    fn run(self) {
        // The thread sleeps between batches instead of blocking on the channel: a sender
        // then never has to wake it, so handing an item over stays one non-blocking push.
        loop {
            let mut spans = Vec::new();
            let mut logs = Vec::new();
            let mut n = 0u64;
            loop {
                match self.rx.try_recv() {
                    Ok(Item::Span(data)) => spans.push(from_span_data(data, &self.service)),
                    Ok(Item::Log(log)) => logs.push(log.into_record()),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.store_batch(spans, logs, n);
                        return;
                    }
                }
                n += 1;
                if n == BATCH as u64 {
                    break;
                }
            }
            if n == 0 {
                std::thread::sleep(DRAIN_INTERVAL);
            } else {
                self.store_batch(spans, logs, n);
            }
        }
    }

    fn store_batch(&self, spans: Vec<SpanRecord>, logs: Vec<LogRecord>, n: u64) {
        if n == 0 {
            return;
        }
        self.store.insert_spans(spans);
        self.store.insert_logs(logs);
        let (lock, cvar) = &*self.flushed;
        if let Ok(mut done) = lock.lock() {
            *done += n;
        }
        cvar.notify_all();
    }
}

/// The span processor of [`Recorder`]: hands every span that ends (sampled for export or
/// only recorded) to the view's thread. Composes with any other processor.
pub struct ViewProcessor {
    recorder: Recorder,
}

impl fmt::Debug for ViewProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewProcessor").finish_non_exhaustive()
    }
}

impl SpanProcessor for ViewProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.recorder.is_enabled() {
            self.recorder.send(Item::Span(span));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.recorder.sync();
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The `tracing` layer of [`Recorder`]: keeps each event written while an OpenTelemetry span
/// is current (message, level, target, fields with sensitive names redacted) for the trace
/// page.
pub struct ViewLogLayer {
    recorder: Recorder,
}

impl fmt::Debug for ViewLogLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewLogLayer").finish_non_exhaustive()
    }
}

impl<S: Subscriber> Layer<S> for ViewLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: layer::Context<'_, S>) {
        if !self.recorder.is_enabled() {
            return;
        }
        let ids = Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return;
        };
        let mut visitor = Fields {
            message: String::new(),
            fields: Vec::new(),
            sensitive: &self.recorder.shared.sensitive,
        };
        event.record(&mut visitor);
        let meta = event.metadata();
        self.recorder.send(Item::Log(PendingLog {
            trace_id,
            span_id,
            time: SystemTime::now(),
            level: meta.level().as_str(),
            target: meta.target(),
            message: visitor.message,
            fields: visitor.fields,
        }));
    }
}

struct Fields<'a> {
    message: String,
    fields: Vec<(&'static str, String)>,
    sensitive: &'a SensitiveHeaders,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            let shown = if self.sensitive.contains(field.name()) {
                tracewire_core::redact::REDACTED.to_owned()
            } else {
                value
            };
            self.fields.push((field.name(), shown));
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

fn unix_nano(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn attributes(list: &[opentelemetry::KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.as_str().to_owned(), kv.value.to_string()))
        .collect()
}

/// Converts an SDK span of `service` to the view's record.
pub(crate) fn from_span_data(data: SpanData, service: &str) -> SpanRecord {
    let parent = data.parent_span_id;
    let (status, status_message) = match data.status {
        Status::Unset => (StatusCode::Unset, String::new()),
        Status::Ok => (StatusCode::Ok, String::new()),
        Status::Error { description } => (StatusCode::Error, description.into_owned()),
    };
    SpanRecord {
        trace_id: data.span_context.trace_id().to_string(),
        span_id: data.span_context.span_id().to_string(),
        parent_span_id: (parent != opentelemetry::trace::SpanId::INVALID)
            .then(|| parent.to_string()),
        name: data.name.into_owned(),
        kind: match data.span_kind {
            SpanKind::Client => Kind::Client,
            SpanKind::Server => Kind::Server,
            SpanKind::Producer => Kind::Producer,
            SpanKind::Consumer => Kind::Consumer,
            SpanKind::Internal => Kind::Internal,
        },
        service: service.to_owned(),
        start_unix_nano: unix_nano(data.start_time),
        end_unix_nano: unix_nano(data.end_time),
        status,
        status_message,
        attributes: attributes(&data.attributes),
        events: data
            .events
            .events
            .iter()
            .map(|e| SpanEvent {
                name: e.name.to_string(),
                time_unix_nano: unix_nano(e.timestamp),
                attributes: attributes(&e.attributes),
            })
            .collect(),
        links: data
            .links
            .links
            .iter()
            .map(|l| SpanLink {
                trace_id: l.span_context.trace_id().to_string(),
                span_id: l.span_context.span_id().to_string(),
                attributes: attributes(&l.attributes),
            })
            .collect(),
        sampled: data.span_context.is_sampled(),
    }
}
