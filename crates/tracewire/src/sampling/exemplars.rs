//! Exemplars written by the tail decision: a kept span of a duration histogram's operation
//! leaves its trace id, span id, duration and end time for that histogram's series.
//!
//! The SDK fills no exemplars, and the keep decision comes after the measurement: so the
//! decision writes them here, and the two metric outputs (`/metrics` in the OpenMetrics format,
//! OTLP/HTTP) attach them to the data points whose attributes the span carries. An exemplar
//! can only come from a kept span, so it never points at a dropped trace.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::SpanKind;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS;

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
    /// The span's attributes (plus `function`/`module` for `#[traced]` spans): a data point
    /// matches when each of its attributes is among these.
    attributes: Vec<KeyValue>,
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

type Slot = (String, String, usize);

#[derive(Default)]
struct Histogram {
    slots: HashMap<Slot, Exemplar>,
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
    let mut attributes = span.attributes.clone();
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
    let outcome = attribute(span, "http.response.status_code")
        .map(|v| v.to_string())
        .unwrap_or_default()
        + attribute(span, "error.type")
            .map(|v| v.as_str())
            .unwrap_or_default()
            .as_ref();
    let exemplar = Exemplar {
        trace_id: span.span_context.trace_id().to_bytes(),
        span_id: span.span_context.span_id().to_bytes(),
        value,
        time: span.end_time,
        attributes,
        bucket,
    };
    let slot = (span.name.to_string(), outcome, bucket);
    let mut histogram = store().histograms[index]
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if histogram.slots.len() >= MAX_SLOTS && !histogram.slots.contains_key(&slot) {
        // Make room: forget the oldest exemplar.
        if let Some(oldest) = histogram
            .slots
            .iter()
            .min_by_key(|(_, e)| e.time)
            .map(|(k, _)| k.clone())
        {
            histogram.slots.remove(&oldest);
        }
    }
    histogram.slots.insert(slot, exemplar);
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
