//! What the view keeps of a span and of a log line: owned, plain data, the same whether it
//! came from this process's SDK or over OTLP.

use std::collections::BTreeMap;
use std::mem::size_of;

use serde::Serialize;

/// The role of a span, as OpenTelemetry's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// In-process work.
    Internal,
    /// Handles a request.
    Server,
    /// Sends a request.
    Client,
    /// Publishes a message.
    Producer,
    /// Processes a message.
    Consumer,
}

impl Kind {
    /// Lower-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }
}

/// A span's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    /// Not set by the instrumentation.
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed.
    Error,
}

/// An event recorded on a span (`exception`, a retry, …).
#[derive(Debug, Clone, Serialize)]
pub struct SpanEvent {
    /// Event name.
    pub name: String,
    /// Nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Attributes, values rendered as text.
    pub attributes: BTreeMap<String, String>,
}

/// A link from a span to another span context.
#[derive(Debug, Clone, Serialize)]
pub struct SpanLink {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// Attributes, values rendered as text.
    pub attributes: BTreeMap<String, String>,
}

/// One finished span.
#[derive(Debug, Clone, Serialize)]
pub struct SpanRecord {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root.
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: Kind,
    /// `service.name` of the resource that recorded it.
    pub service: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// Status code.
    pub status: StatusCode,
    /// Status description (set with an error).
    pub status_message: String,
    /// Attributes, values rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// Links.
    pub links: Vec<SpanLink>,
    /// Whether the span was sampled (kept for export) when it ended.
    pub sampled: bool,
}

impl SpanRecord {
    /// Duration in nanoseconds.
    pub fn duration_nano(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// The attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether the span failed.
    pub fn is_error(&self) -> bool {
        self.status == StatusCode::Error
    }

    /// An estimate of the heap and inline bytes this record holds, for the memory cap.
    pub(crate) fn estimated_bytes(&self) -> usize {
        size_of::<Self>()
            + self.trace_id.len()
            + self.span_id.len()
            + self.parent_span_id.as_ref().map_or(0, String::len)
            + self.name.len()
            + self.service.len()
            + self.status_message.len()
            + map_bytes(&self.attributes)
            + self
                .events
                .iter()
                .map(|e| size_of::<SpanEvent>() + e.name.len() + map_bytes(&e.attributes))
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| {
                    size_of::<SpanLink>()
                        + l.trace_id.len()
                        + l.span_id.len()
                        + map_bytes(&l.attributes)
                })
                .sum::<usize>()
    }
}

/// A log line written while a span was current.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// Nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The `tracing` target (module path) or the OTLP scope.
    pub target: String,
    /// The message.
    pub message: String,
    /// Other fields, values rendered as text (sensitive names redacted).
    pub fields: BTreeMap<String, String>,
}

impl LogRecord {
    pub(crate) fn estimated_bytes(&self) -> usize {
        size_of::<Self>()
            + self.trace_id.len()
            + self.span_id.len()
            + self.level.len()
            + self.target.len()
            + self.message.len()
            + map_bytes(&self.fields)
    }
}

/// Per-entry overhead of a `BTreeMap` node, roughly.
const MAP_ENTRY_OVERHEAD: usize = 16;

fn map_bytes(map: &BTreeMap<String, String>) -> usize {
    map.iter()
        .map(|(k, v)| 2 * size_of::<String>() + MAP_ENTRY_OVERHEAD + k.len() + v.len())
        .sum()
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Parses 32 hex digits into a trace id; `None` for anything else.
pub(crate) fn parse_trace_id(text: &str) -> Option<u128> {
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}
