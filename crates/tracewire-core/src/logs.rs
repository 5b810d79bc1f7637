//! JSON log lines that carry the trace.
//!
//! [`JsonLayer`] is a `tracing-subscriber` layer that writes one JSON object per line for every
//! `tracing` event. Each line reads the OpenTelemetry context that is current when the event is
//! recorded, so an event emitted while a tracewire span is attached (a request handler, a
//! `#[traced]` body, a consumer handler) carries that span's `trace_id` and `span_id`.
//!
//! The schema is stable and documented in `docs/conventions.md`:
//!
//! | key | when | value |
//! |---|---|---|
//! | `timestamp` | always | RFC 3339, UTC, nanoseconds |
//! | `level` | always | `TRACE` … `ERROR` |
//! | `message` | always | the event's message (empty when it has none) |
//! | `target` | always | the event's target (module path by default) |
//! | `trace_id`, `span_id` | a valid span is current | 32 / 16 lowercase hex digits |
//! | `request_id` | serving an HTTP request | the request's `x-request-id` |
//! | static fields | configured | e.g. `service.name` |
//! | span fields | inside `tracing` spans | fields of the enclosing `tracing` spans, outermost first |
//! | event fields | always | the event's own fields |
//!
//! ## Storms
//!
//! With [`JsonLayer::with_rate_limit`], each callsite may write that many events per second;
//! the rest are suppressed and counted, and once the interval is over one summary line per
//! callsite (`"message":"log events suppressed by the rate limit"`, level `WARN`, the
//! callsite's `target`, `log.suppressed`, `log.rate_limit`, `code.file.path`,
//! `code.line.number`) says how many. The access log (target `tracewire::access`) is exempt
//! unless [`JsonLayer::rate_limit_access_log`] says otherwise.
//!
//! An event field whose name collides with one of the keys above is written as `field.<name>`;
//! a field named like a sensitive header (`authorization`, `cookie`, …) is written as
//! `"REDACTED"`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::{self, Write};

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer;
use tracing_subscriber::registry::LookupSpan;

use crate::context::RequestId;
use crate::dropped::{Reason, Signal};
use crate::redact::{REDACTED, SensitiveHeaders};
use crate::text;

/// The keys every log line writes itself; an event field of one of these names is written as
/// `field.<name>`, and `#[derive(Event)]` refuses them as field names.
pub const RESERVED_KEYS: [&str; 7] = [
    "timestamp",
    "level",
    "message",
    "target",
    "trace_id",
    "span_id",
    "request_id",
];

/// A `tracing-subscriber` layer writing one JSON object per event, stamped with the current
/// OpenTelemetry trace and span ids. See the [module documentation](self) for the schema.
///
/// ```
/// use tracing_subscriber::prelude::*;
/// let layer = tracewire_core::logs::JsonLayer::new()
///     .with_static_field("service.name", "checkout")
///     .with_writer(std::io::sink);
/// let _guard = tracing_subscriber::registry().with(layer).set_default();
/// tracing::info!(order_id = 7, "order placed");
/// ```
pub struct JsonLayer<W = fn() -> io::Stdout> {
    make_writer: W,
    statics: String,
    /// The keys of the static fields: an event or span field with one of these names is
    /// written as `field.{name}`, so a line never holds a key twice.
    static_keys: Vec<Box<str>>,
    sensitive: SensitiveHeaders,
    limiter: RateLimiter,
    limit_access_log: bool,
}

mod rate_limit;
pub use rate_limit::{DEFAULT_LIMIT as DEFAULT_RATE_LIMIT, ENV as RATE_LIMIT_ENV, limit_from_env};
use rate_limit::{RateLimiter, Suppressed};

/// The target of the access-log event every HTTP request writes.
const ACCESS_TARGET: &str = "tracewire::access";

impl<W> fmt::Debug for JsonLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLayer")
            .field("statics", &self.statics)
            .field("sensitive", &self.sensitive)
            .finish_non_exhaustive()
    }
}

impl Default for JsonLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonLayer {
    /// A layer writing to standard output.
    pub fn new() -> Self {
        Self {
            make_writer: io::stdout,
            statics: String::new(),
            static_keys: Vec::new(),
            sensitive: SensitiveHeaders::default(),
            limiter: RateLimiter::new(0),
            limit_access_log: false,
        }
    }
}

impl<W> JsonLayer<W> {
    /// Writes lines to `make_writer` instead (a file, a buffer, `std::io::sink`, …).
    pub fn with_writer<W2>(self, make_writer: W2) -> JsonLayer<W2>
    where
        W2: for<'w> MakeWriter<'w> + 'static,
    {
        JsonLayer {
            make_writer,
            statics: self.statics,
            static_keys: self.static_keys,
            sensitive: self.sensitive,
            limiter: self.limiter,
            limit_access_log: self.limit_access_log,
        }
    }

    /// Lets each callsite write at most `per_second` events per second (0, the default of a
    /// bare layer, turns the limit off; `tracewire::init()` uses `TRACEWIRE_LOG_RATE_LIMIT`,
    /// else 100). Suppressed events are counted, and summarised in one line per callsite and
    /// interval.
    pub fn with_rate_limit(mut self, per_second: u64) -> Self {
        self.limiter = RateLimiter::new(per_second);
        self
    }

    /// Whether the access log (target `tracewire::access`) is rate limited too (default: no,
    /// every request keeps its line).
    pub fn rate_limit_access_log(mut self, limited: bool) -> Self {
        self.limit_access_log = limited;
        self
    }

    /// Adds a field written on every line, after the trace ids (for resource keys such as
    /// `service.name`).
    pub fn with_static_field(mut self, key: &str, value: &str) -> Self {
        self.static_keys.push(Box::from(key));
        self.statics.push(',');
        push_json_str(&mut self.statics, key);
        self.statics.push(':');
        push_json_str(&mut self.statics, value);
        self
    }

    /// Replaces the names whose values are redacted in event fields.
    pub fn with_sensitive_fields(mut self, sensitive: SensitiveHeaders) -> Self {
        self.sensitive = sensitive;
        self
    }
}

/// Fields of a `tracing` span, pre-rendered as `,"k":v` fragments.
struct SpanFields(String);

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: layer::Context<'_, S>,
    ) {
        let mut buf = String::new();
        let mut visitor = FieldVisitor {
            out: &mut buf,
            message: None,
            sensitive: &self.sensitive,
            static_keys: &self.static_keys,
        };
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(buf));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                let mut visitor = FieldVisitor {
                    out: &mut fields.0,
                    message: None,
                    sensitive: &self.sensitive,
                    static_keys: &self.static_keys,
                };
                values.record(&mut visitor);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) {
        let meta = event.metadata();
        if self.limiter.limit() > 0 && (self.limit_access_log || meta.target() != ACCESS_TARGET) {
            let mut summaries = Vec::new();
            let admitted = self.limiter.admit(meta, &mut summaries);
            for summary in &summaries {
                self.write_summary(summary);
            }
            if !admitted {
                return;
            }
        }
        thread_local! {
            static BUFFERS: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
        }
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => {
                let (line, fields) = &mut *bufs;
                line.clear();
                fields.clear();
                self.render(event, &ctx, line, fields);
                self.write(event, line);
            }
            // An event recorded while rendering another one (from a writer, say).
            Err(_) => {
                let (mut line, mut fields) = (String::new(), String::new());
                self.render(event, &ctx, &mut line, &mut fields);
                self.write(event, &line);
            }
        });
    }
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn render<S>(
        &self,
        event: &Event<'_>,
        ctx: &layer::Context<'_, S>,
        line: &mut String,
        fields: &mut String,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut visitor = FieldVisitor {
            out: fields,
            message: None,
            sensitive: &self.sensitive,
            static_keys: &self.static_keys,
        };
        event.record(&mut visitor);
        let message = visitor.message.take();
        let meta = event.metadata();

        line.push_str("{\"timestamp\":\"");
        text::push_rfc3339(line, std::time::SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"message\":");
        push_json_str(line, message.as_deref().unwrap_or(""));
        line.push_str(",\"target\":");
        push_json_str(line, meta.target());
        Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                line.push_str(",\"trace_id\":\"");
                text::push_hex(line, &sc.trace_id().to_bytes());
                line.push_str("\",\"span_id\":\"");
                text::push_hex(line, &sc.span_id().to_bytes());
                line.push('"');
            }
            if let Some(id) = cx.get::<RequestId>() {
                line.push_str(",\"request_id\":");
                push_json_str(line, id.as_str());
            }
        });
        line.push_str(&self.statics);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    line.push_str(&f.0);
                }
            }
        }
        line.push_str(fields);
        line.push_str("}\n");
    }

    /// Writes the line saying how many events one callsite had suppressed.
    fn write_summary(&self, summary: &Suppressed) {
        let meta = summary.metadata;
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        text::push_rfc3339(&mut line, std::time::SystemTime::now());
        line.push_str("\",\"level\":\"WARN\",\"message\":");
        push_json_str(&mut line, "log events suppressed by the rate limit");
        line.push_str(",\"target\":");
        push_json_str(&mut line, meta.target());
        line.push_str(&self.statics);
        line.push_str(",\"log.suppressed\":");
        text::push_int(&mut line, summary.count);
        line.push_str(",\"log.rate_limit\":");
        text::push_int(&mut line, self.limiter.limit());
        if let Some(file) = meta.file() {
            line.push_str(",\"code.file.path\":");
            push_json_str(&mut line, file);
        }
        if let Some(n) = meta.line() {
            line.push_str(",\"code.line.number\":");
            text::push_int(&mut line, n);
        }
        line.push_str("}\n");
        let mut writer = self.make_writer.make_writer_for(meta);
        if writer.write_all(line.as_bytes()).is_err() {
            crate::dropped::record(Signal::Logs, Reason::WriteFailed, 1);
        }
    }

    fn write(&self, event: &Event<'_>, line: &str) {
        let mut writer = self.make_writer.make_writer_for(event.metadata());
        // A log line that cannot be written is dropped and counted: telemetry never fails the
        // service.
        if writer.write_all(line.as_bytes()).is_err() {
            crate::dropped::record(Signal::Logs, Reason::WriteFailed, 1);
        }
    }
}

struct FieldVisitor<'a> {
    out: &'a mut String,
    message: Option<String>,
    sensitive: &'a SensitiveHeaders,
    static_keys: &'a [Box<str>],
}

impl FieldVisitor<'_> {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        self.out.push(',');
        if RESERVED_KEYS.contains(&name) || self.static_keys.iter().any(|k| &**k == name) {
            push_json_str(self.out, &format!("field.{name}"));
        } else {
            push_json_str(self.out, name);
        }
        self.out.push(':');
        if self.sensitive.contains(name) {
            push_json_str(self.out, REDACTED);
            return false;
        }
        true
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && self.message.is_none() {
            self.message = Some(value.to_owned());
        } else if self.key(field) {
            push_json_str(self.out, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            text::push_int(self.out, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            text::push_int(self.out, value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        if self.key(field) {
            text::push_int(self.out, value);
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if self.key(field) {
            text::push_int(self.out, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            text::push_f64(self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            push_json_str(self.out, &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" && self.message.is_none() {
            self.message = Some(format!("{value:?}"));
        } else if self.key(field) {
            push_json_str(self.out, &format!("{value:?}"));
        }
    }
}

/// Appends `s` as a JSON string literal (quotes and escapes included).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buf) -> Vec<serde_json::Value> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn escapes() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn line_carries_trace_fields_and_redacts() {
        let buf = Buf::default();
        let writer = buf.clone();
        let layer = JsonLayer::new()
            .with_static_field("service.name", "svc")
            .with_writer(move || writer.clone());
        let _guard = tracing_subscriber::registry().with(layer).set_default();

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("t");
        let span = tracer.start("work");
        let cx = Context::current_with_span(span).with_value(RequestId::new("req-1"));
        let (trace_id, span_id) = {
            let s = cx.span();
            (
                s.span_context().trace_id().to_string(),
                s.span_context().span_id().to_string(),
            )
        };
        {
            let _attached = cx.attach();
            let outer = tracing::info_span!("outer", tenant = "acme");
            let _e = outer.enter();
            tracing::warn!(
                order_id = 7u64,
                authorization = "Bearer x",
                message_len = 1.5,
                level = "shadow",
                "placed \"it\""
            );
        }
        tracing::info!("outside");

        let lines = lines(&buf);
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(l["level"], "WARN");
        assert_eq!(l["message"], "placed \"it\"");
        assert_eq!(l["target"], module_path!());
        assert_eq!(l["trace_id"], trace_id.as_str());
        assert_eq!(l["span_id"], span_id.as_str());
        assert_eq!(l["request_id"], "req-1");
        assert_eq!(l["service.name"], "svc");
        assert_eq!(l["tenant"], "acme");
        assert_eq!(l["order_id"], 7);
        assert_eq!(l["authorization"], "REDACTED");
        assert_eq!(l["field.level"], "shadow");
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(lines[1].get("trace_id").is_none());
        assert_eq!(lines[1]["message"], "outside");
    }

    #[test]
    fn keys_come_in_the_documented_order_once_each() {
        let buf = Buf::default();
        let writer = buf.clone();
        let layer = JsonLayer::new()
            .with_static_field("service.name", "svc")
            .with_writer(move || writer.clone());
        let _guard = tracing_subscriber::registry().with(layer).set_default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let cx = Context::current_with_span(provider.tracer("t").start("work"))
            .with_value(RequestId::new("req-1"));
        {
            let _attached = cx.attach();
            let outer = tracing::info_span!("outer", tenant = "acme");
            let _e = outer.enter();
            tracing::info!(service.name = "user", order_id = 7u64, "placed");
        }
        let raw = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        // Read on the raw line, not through a map: a map would hide a repeated key.
        let keys: Vec<&str> = raw
            .trim_end()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .split(",\"")
            .map(|kv| kv.trim_start_matches('"').split('"').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "message",
                "target",
                "trace_id",
                "span_id",
                "request_id",
                "service.name",
                "tenant",
                "field.service.name",
                "order_id",
            ]
        );
        assert_eq!(raw.matches("\"service.name\":\"svc\"").count(), 1);
        assert!(raw.contains("\"field.service.name\":\"user\""));
    }

    #[test]
    fn a_storm_is_cut_to_the_budget_with_one_summary_per_callsite() {
        let buf = Buf::default();
        let writer = buf.clone();
        let layer = JsonLayer::new()
            .with_rate_limit(10)
            .with_writer(move || writer.clone());
        let _guard = tracing_subscriber::registry().with(layer).set_default();
        let before = crate::dropped::count(Signal::Logs, Reason::RateLimited);

        // Within one second (the interval the limiter started in): 10 of 500 get through.
        for i in 0..500 {
            tracing::error!(attempt = i, "database unreachable");
        }
        for _ in 0..3 {
            tracing::warn!("another callsite");
        }
        for _ in 0..50 {
            tracing::info!(target: "tracewire::access", "GET /");
        }
        let written = lines(&buf);
        let storm: Vec<_> = written
            .iter()
            .filter(|l| l["message"] == "database unreachable")
            .collect();
        assert!(storm.len() <= 10 && !storm.is_empty(), "{}", storm.len());
        assert_eq!(storm[0]["attempt"], 0);
        let other = written
            .iter()
            .filter(|l| l["message"] == "another callsite");
        assert_eq!(other.count(), 3);
        let access = written.iter().filter(|l| l["message"] == "GET /");
        assert_eq!(access.count(), 50, "the access log is exempt");
        let suppressed_now = 500 - storm.len() as u64;
        assert_eq!(
            crate::dropped::count(Signal::Logs, Reason::RateLimited) - before,
            suppressed_now
        );

        // The next interval: the first event writes the previous interval's summary.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tracing::warn!("after the storm");
        let written = lines(&buf);
        let summaries: Vec<_> = written
            .iter()
            .filter(|l| l["message"] == "log events suppressed by the rate limit")
            .collect();
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let summary = summaries[0];
        assert_eq!(summary["level"], "WARN");
        assert_eq!(summary["target"], module_path!());
        assert_eq!(summary["log.suppressed"], suppressed_now);
        assert_eq!(summary["log.rate_limit"], 10);
        assert_eq!(summary["code.file.path"], file!());
        assert!(summary["code.line.number"].as_u64().is_some());
        assert_eq!(
            written
                .iter()
                .filter(|l| l["message"] == "after the storm")
                .count(),
            1
        );
    }

    #[test]
    fn a_line_the_writer_refuses_is_counted() {
        struct Broken;
        impl io::Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let layer = JsonLayer::new().with_writer(|| Broken);
        let _guard = tracing_subscriber::registry().with(layer).set_default();
        let before = crate::dropped::count(Signal::Logs, Reason::WriteFailed);
        tracing::info!("lost");
        tracing::info!("lost too");
        assert_eq!(
            crate::dropped::count(Signal::Logs, Reason::WriteFailed) - before,
            2
        );
    }
}
