//! Exemplars written by the tail decision: a kept span of a duration histogram's operation
//! leaves its trace id, span id, duration and end time for that histogram's series.
//!
//! The SDK fills no exemplars, and the keep decision comes after the measurement: so the
//! decision writes them here, and the two metric outputs (`/metrics` in the OpenMetrics format,
//! OTLP/HTTP) attach them to the data points whose attributes the span carries. An exemplar
//! can only come from a kept span, so it never points at a dropped trace.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::SpanKind;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use tracewire_core::metrics::{DURATION_BOUNDARIES_SECONDS, Fnv};

/// The duration histograms that carry exemplars, with their Prometheus family names.
pub(crate) const HISTOGRAMS: [(&str, &str); 5] = [
    (
        "http.server.request.duration",
        "http_server_request_duration_seconds",
    ),
    (
        "http.client.request.duration",
        "http_client_request_duration_seconds",
    ),
    (
        "messaging.process.duration",
        "messaging_process_duration_seconds",
    ),
    (
        "messaging.client.operation.duration",
        "messaging_client_operation_duration_seconds",
    ),
    ("function.calls.duration", "function_calls_duration_seconds"),
];

/// Distinct (operation, outcome, bucket) slots kept per histogram.
const MAX_SLOTS: usize = 1024;

/// One exemplar.
#[derive(Debug, Clone)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    /// Seconds.
    pub(crate) value: f64,
    pub(crate) time: SystemTime,
    /// The span's [`matchable`] attributes (plus `function`/`module` for `#[traced]` spans):
    /// a data point matches when each of its attributes is among these.
    attributes: Vec<KeyValue>,
    /// How many of `attributes`, from the front, are the span's own (the rest are derived
    /// from them).
    from_span: usize,
    /// Index of the histogram bucket the value falls in.
    pub(crate) bucket: usize,
}

impl Exemplar {
    /// Whether every `(key, value)` of a data point is an attribute of this exemplar's span.
    /// With `prometheus`, keys are compared as Prometheus label names (`.` → `_`).
    pub(crate) fn matches<'a>(
        &self,
        mut point: impl Iterator<Item = (&'a str, String)>,
        prometheus: bool,
    ) -> bool {
        point.all(|(key, value)| {
            self.attributes.iter().any(|kv| {
                let same_key = if prometheus {
                    label_name_eq(kv.key.as_str(), key)
                } else {
                    kv.key.as_str() == key
                };
                same_key && value_eq(&kv.value, &value)
            })
        })
    }

    /// Whether this exemplar was made from a span with the same matchable attributes as
    /// `span`'s (then the derived ones are the same too).
    fn has_attributes_of(&self, span: &SpanData) -> bool {
        self.attributes[..self.from_span]
            .iter()
            .eq(matchable_of(span))
    }

    /// The trace id as 32 hex digits.
    pub(crate) fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub(crate) fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn label_name_eq(attribute: &str, label: &str) -> bool {
    attribute.len() == label.len()
        && attribute.bytes().zip(label.bytes()).all(|(a, l)| {
            let a = if a.is_ascii_alphanumeric() || a == b'_' {
                a
            } else {
                b'_'
            };
            a == l
        })
}

fn value_eq(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => s.as_str() == text,
        other => other.to_string() == text,
    }
}

/// Where an exemplar is kept: the span's name, its outcome and the bucket.
type Slot = (Cow<'static, str>, Outcome, usize);

/// The status code and `error.type` of a span, as they tell its exemplar slot apart. Built
/// without allocating for the usual case (a numeric status, no error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Outcome {
    Code(Option<i64>, Option<Box<str>>),
    /// A status code recorded as something other than an integer, as text.
    Text(String, Option<Box<str>>),
}

impl Outcome {
    fn of(span: &SpanData) -> Self {
        let error = attribute(span, "error.type").map(|v| Box::from(v.as_str().as_ref()));
        match attribute(span, "http.response.status_code") {
            None => Outcome::Code(None, error),
            Some(Value::I64(code)) => Outcome::Code(Some(*code), error),
            Some(other) => Outcome::Text(other.to_string(), error),
        }
    }
}

/// Whether an attribute of a kept span goes into its exemplar. Attributes that change with
/// every request or message are left out: no data point of the histograms above carries them
/// (the semantic conventions keep them off metrics), and an exemplar is matched to data points
/// by its attributes, so keeping one then copies only what a match can use. Checked for every
/// attribute of every kept span: a `match`, which compares lengths before bytes.
fn matchable(key: &str) -> bool {
    match key {
        "url.path"
        | "url.query"
        | "url.full"
        | "user_agent.original"
        | "client.address"
        | "client.port"
        | "http.request.id"
        | "network.peer.address"
        | "network.peer.port"
        | "messaging.message.id"
        | "messaging.message.conversation_id"
        | "messaging.message.body.size"
        | "messaging.kafka.offset" => false,
        _ => !key.starts_with("http.request.header.") && !key.starts_with("http.response.header."),
    }
}

/// The attributes of `span` that go into its exemplar, in order.
fn matchable_of(span: &SpanData) -> impl Iterator<Item = &KeyValue> {
    span.attributes
        .iter()
        .filter(|kv| matchable(kv.key.as_str()))
}

#[derive(Default)]
struct Histogram {
    /// Keyed by names and outcomes tracewire's own instrumentation writes, and bounded
    /// ([`MAX_SLOTS`]): hashed with FNV, found on every kept span.
    slots: HashMap<Slot, Exemplar, BuildHasherDefault<Fnv>>,
}

struct Store {
    histograms: [Mutex<Histogram>; 5],
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| Store {
        histograms: Default::default(),
    })
}

/// The histogram a span's duration is recorded in, by the span's kind and attributes.
fn histogram_of(span: &SpanData) -> Option<usize> {
    let has = |key: &str| span.attributes.iter().any(|kv| kv.key.as_str() == key);
    match span.span_kind {
        SpanKind::Server if has("http.request.method") => Some(0),
        SpanKind::Client if has("http.request.method") => Some(1),
        SpanKind::Consumer if has("messaging.system") => Some(2),
        SpanKind::Producer if has("messaging.system") => Some(3),
        SpanKind::Internal if has("code.function.name") => Some(4),
        _ => None,
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// Records the exemplar of a kept span, when its operation has a duration histogram.
///
/// A slot that already holds an exemplar with the same attributes (the usual case: the same
/// route, status and bucket as the last kept span) is updated in place, without allocating:
/// every kept request writes one, on every worker thread.
pub(crate) fn offer(span: &SpanData) {
    let Some(index) = histogram_of(span) else {
        return;
    };
    let Ok(duration) = span.end_time.duration_since(span.start_time) else {
        return;
    };
    let value = duration.as_secs_f64();
    let bucket = DURATION_BOUNDARIES_SECONDS
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(DURATION_BOUNDARIES_SECONDS.len());
    let slot = (span.name.clone(), Outcome::of(span), bucket);
    let trace_id = span.span_context.trace_id().to_bytes();
    let span_id = span.span_context.span_id().to_bytes();
    let histogram = &store().histograms[index];
    {
        let mut histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = histogram.slots.get_mut(&slot)
            && existing.has_attributes_of(span)
        {
            existing.trace_id = trace_id;
            existing.span_id = span_id;
            existing.value = value;
            existing.time = span.end_time;
            return;
        }
    }
    // A new slot, or other attributes: the exemplar is built outside the lock.
    let (attributes, from_span) = matchable_attributes(span, index);
    let exemplar = Exemplar {
        trace_id,
        span_id,
        value,
        time: span.end_time,
        attributes,
        from_span,
        bucket,
    };
    let mut histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
    let mut forgotten = None;
    if histogram.slots.len() >= MAX_SLOTS && !histogram.slots.contains_key(&slot) {
        // Make room: forget the oldest exemplar.
        if let Some(oldest) = histogram
            .slots
            .iter()
            .min_by_key(|(_, e)| e.time)
            .map(|(k, _)| k.clone())
        {
            forgotten = histogram.slots.remove(&oldest);
        }
    }
    let replaced = histogram.slots.insert(slot, exemplar);
    // Freed after the lock: other threads keeping exemplars do not wait for it.
    drop(histogram);
    drop((replaced, forgotten));
}

/// The attributes of `span` its exemplar is matched by ([`matchable`]), then, for a
/// `#[traced]` span (histogram `index` 4), the `function` and `module` its metrics are
/// labelled with; and how many of them come from the span as they are.
fn matchable_attributes(span: &SpanData, index: usize) -> (Vec<KeyValue>, usize) {
    let from_span = matchable_of(span).count();
    let mut attributes = Vec::with_capacity(from_span + if index == 4 { 2 } else { 0 });
    attributes.extend(matchable_of(span).cloned());
    if index == 4 {
        // `#[traced]` metrics are labelled `function` and `module`.
        if let (Some(qualified), Some(module)) = (
            attribute(span, "code.function.name").map(Value::as_str),
            attribute(span, "code.namespace").map(Value::as_str),
        ) {
            let function = qualified
                .strip_prefix(&*module)
                .and_then(|f| f.strip_prefix("::"))
                .map(str::to_owned)
                .unwrap_or_else(|| qualified.rsplit("::").next().unwrap_or_default().to_owned());
            attributes.push(KeyValue::new(Key::from_static_str("function"), function));
            attributes.push(KeyValue::new(
                Key::from_static_str("module"),
                module.into_owned(),
            ));
        }
    }
    (attributes, from_span)
}

/// The newest exemplar per bucket (index into the bucket list, `+Inf` last) among those of
/// `metric` (its OpenTelemetry name, or its Prometheus family name with `prometheus`) that
/// match the data point's attributes.
pub(crate) fn for_point<'a, I>(metric: &str, point: I, prometheus: bool) -> Vec<Option<Exemplar>>
where
    I: Iterator<Item = (&'a str, String)> + Clone,
{
    let mut out = vec![None; DURATION_BOUNDARIES_SECONDS.len() + 1];
    let Some(index) = HISTOGRAMS.iter().position(|(otel, prom)| {
        if prometheus {
            *prom == metric
        } else {
            *otel == metric
        }
    }) else {
        return out;
    };
    let histogram = store().histograms[index]
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for exemplar in histogram.slots.values() {
        let Some(slot) = out.get_mut(exemplar.bucket) else {
            continue;
        };
        if slot
            .as_ref()
            .is_some_and(|e: &Exemplar| e.time >= exemplar.time)
        {
            continue;
        }
        if exemplar.matches(point.clone(), prometheus) {
            *slot = Some(exemplar.clone());
        }
    }
    out
}

/// Whether any exemplar is stored (a cheap check before decoding an export).
pub(crate) fn any() -> bool {
    store()
        .histograms
        .iter()
        .any(|h| !h.lock().unwrap_or_else(|p| p.into_inner()).slots.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
    use std::time::Duration;

    /// A kept server span named `GET /exemplar-test` with `http.request.method` = `method`,
    /// lasting a little over 20 ms, with two per-request attributes.
    fn server_span(trace: u128, method: &'static str, path: &str) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(trace as u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("GET /exemplar-test"),
            start_time: start,
            end_time: start + Duration::from_millis(20) + Duration::from_nanos(trace as u64),
            attributes: vec![
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", "/exemplar-test"),
                KeyValue::new("http.response.status_code", 200),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("client.address", "10.0.0.1".to_owned()),
            ],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    /// The trace ids of the exemplars found for a data point with these attributes.
    fn found(point: &[(&'static str, &str)]) -> Vec<String> {
        for_point(
            "http.server.request.duration",
            point.iter().map(|(k, v)| (*k, (*v).to_owned())),
            false,
        )
        .into_iter()
        .flatten()
        .map(|e| e.trace_id_hex())
        .collect()
    }

    #[test]
    fn a_slot_follows_the_last_kept_span_and_matches_by_metric_attributes_only() {
        let point = [
            ("http.request.method", "GET"),
            ("http.route", "/exemplar-test"),
            ("http.response.status_code", "200"),
        ];
        offer(&server_span(0xa1, "GET", "/exemplar-test/1"));
        assert_eq!(found(&point), [format!("{:032x}", 0xa1)]);

        // The same slot and attributes, another request: updated in place.
        offer(&server_span(0xa2, "GET", "/exemplar-test/2"));
        assert_eq!(found(&point), [format!("{:032x}", 0xa2)]);

        // Per-request attributes are not kept: no data point carries them.
        let with_path = [
            ("http.route", "/exemplar-test"),
            ("url.path", "/exemplar-test/2"),
        ];
        assert!(found(&with_path).is_empty());

        // The same slot (name, status, bucket) with other attributes: the exemplar is
        // replaced, attributes and all.
        offer(&server_span(0xa3, "PUT", "/exemplar-test/3"));
        assert!(found(&point).is_empty());
        let put = [
            ("http.request.method", "PUT"),
            ("http.route", "/exemplar-test"),
        ];
        assert_eq!(found(&put), [format!("{:032x}", 0xa3)]);
    }
}
