use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::{KeyValue, Value, global};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// In-memory capture of everything tracewire records in this process.
///
/// ```
/// let capture = tracewire_test::Capture::install();
/// tracing::info!("hello");
/// assert_eq!(capture.logs()[0]["message"], "hello");
/// ```
#[derive(Debug, Clone)]
pub struct Capture {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    logs: LogBuffer,
}

#[derive(Clone, Default, Debug)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Installs the capture with an always-on sampler (parent-based).
    pub fn install() -> Self {
        Self::install_with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    }

    /// Installs the capture with `sampler` as the tracer provider's sampler.
    ///
    /// Sets the global tracer provider, meter provider and propagator (W3C trace context +
    /// baggage), and installs a global `tracing` subscriber writing tracewire's JSON lines into
    /// memory (at `TRACE` level) when none is installed yet.
    pub fn install_with_sampler(
        sampler: impl opentelemetry_sdk::trace::ShouldSample + 'static,
    ) -> Self {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .with_sampler(sampler)
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        // As `tracewire::init()` installs it: instrumentation uses the SDK's tracer directly.
        tracewire_core::provider::set_tracer_provider(tracer_provider.clone());
        global::set_meter_provider(meter_provider.clone());
        // What `tracewire::init()` installs by default.
        global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracewire_core::logs::JsonLayer::new()
                .with_static_field("service.name", "test")
                .with_writer(move || writer.clone()),
        );
        let _ = tracing::subscriber::set_global_default(subscriber);
        Self {
            spans,
            metrics,
            tracer_provider,
            meter_provider,
            logs,
        }
    }

    /// The tracer provider installed globally.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// Every span ended so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        let _ = self.tracer_provider.force_flush();
        self.spans.get_finished_spans().unwrap_or_default()
    }

    /// Ended spans named `name`.
    pub fn spans_named(&self, name: &str) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// The one ended span named `name`; panics with the names that were recorded otherwise.
    pub fn span(&self, name: &str) -> SpanData {
        let all = self.spans();
        let mut found: Vec<SpanData> = all.iter().filter(|s| s.name == name).cloned().collect();
        match found.len() {
            1 => found.remove(0),
            n => panic!(
                "expected exactly one span named {name:?}, found {n}; spans: {:?}",
                all.iter().map(|s| &s.name).collect::<Vec<_>>()
            ),
        }
    }

    /// Waits (up to `timeout`) until at least `n` spans named `name` have ended.
    pub async fn wait_for_spans(
        &self,
        name: &str,
        n: usize,
        timeout: std::time::Duration,
    ) -> Vec<SpanData> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let found = self.spans_named(name);
            if found.len() >= n || std::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Every metric data point recorded so far (cumulative), flattened.
    pub fn metrics(&self) -> Vec<MetricPoint> {
        let _ = self.meter_provider.force_flush();
        let exported = self.metrics.get_finished_metrics().unwrap_or_default();
        let Some(latest) = exported.last() else {
            return Vec::new();
        };
        let mut points = Vec::new();
        for scope in latest.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric.name().to_string();
                let unit = metric.unit().to_string();
                match metric.data() {
                    AggregatedMetrics::F64(d) => flatten(&name, &unit, d, |v| v, &mut points),
                    AggregatedMetrics::U64(d) => {
                        flatten(&name, &unit, d, |v| v as f64, &mut points)
                    }
                    AggregatedMetrics::I64(d) => {
                        flatten(&name, &unit, d, |v| v as f64, &mut points)
                    }
                }
            }
        }
        points
    }

    /// Data points of the metric `name`.
    pub fn metric(&self, name: &str) -> Vec<MetricPoint> {
        self.metrics()
            .into_iter()
            .filter(|p| p.name == name)
            .collect()
    }

    /// The sum of the counter `name` over the points carrying every pair in `with`.
    pub fn counter(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        crate::attrs::total(self, name, with) as u64
    }

    /// The number of recordings of the histogram `name` over the points carrying every pair
    /// in `with`, and the histogram's unit.
    pub fn histogram_count(&self, name: &str, with: &[(&str, &str)]) -> (u64, String) {
        let points = crate::attrs::points(self, name, with);
        let unit = points.first().map(|p| p.unit.clone()).unwrap_or_default();
        let count = points.iter().map(MetricPoint::count_or_value).sum::<f64>();
        (count as u64, unit)
    }

    /// The JSON log lines written so far, parsed.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        let bytes = self.logs.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The raw log output (to check that a secret never appears anywhere).
    pub fn raw_logs(&self) -> String {
        let bytes = self.logs.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn flatten<T: Copy>(
    name: &str,
    unit: &str,
    data: &MetricData<T>,
    to_f64: impl Fn(T) -> f64,
    out: &mut Vec<MetricPoint>,
) {
    let attrs = |it: &mut dyn Iterator<Item = &KeyValue>| -> BTreeMap<String, String> {
        it.map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    };
    match data {
        MetricData::Gauge(g) => out.extend(g.data_points().map(|p| MetricPoint {
            name: name.to_string(),
            unit: unit.to_string(),
            attributes: attrs(&mut p.attributes()),
            value: PointValue::Gauge(to_f64(p.value())),
        })),
        MetricData::Sum(s) => out.extend(s.data_points().map(|p| MetricPoint {
            name: name.to_string(),
            unit: unit.to_string(),
            attributes: attrs(&mut p.attributes()),
            value: PointValue::Sum(to_f64(p.value())),
        })),
        MetricData::Histogram(h) => out.extend(h.data_points().map(|p| MetricPoint {
            name: name.to_string(),
            unit: unit.to_string(),
            attributes: attrs(&mut p.attributes()),
            value: PointValue::Histogram {
                count: p.count(),
                sum: to_f64(p.sum()),
                bounds: p.bounds().collect(),
            },
        })),
        MetricData::ExponentialHistogram(h) => out.extend(h.data_points().map(|p| MetricPoint {
            name: name.to_string(),
            unit: unit.to_string(),
            attributes: attrs(&mut p.attributes()),
            value: PointValue::Histogram {
                count: p.count() as u64,
                sum: to_f64(p.sum()),
                bounds: Vec::new(),
            },
        })),
    }
}

/// One metric data point, with attributes rendered as text.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Instrument name.
    pub name: String,
    /// Instrument unit.
    pub unit: String,
    /// Attributes (`key → value` as text).
    pub attributes: BTreeMap<String, String>,
    /// The value.
    pub value: PointValue,
}

impl MetricPoint {
    /// The attribute `key` as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The point's value for sums and gauges, its count for histograms.
    pub fn count_or_value(&self) -> f64 {
        match &self.value {
            PointValue::Sum(v) | PointValue::Gauge(v) => *v,
            PointValue::Histogram { count, .. } => *count as f64,
        }
    }
}

/// The value of a [`MetricPoint`].
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A counter or up-down counter.
    Sum(f64),
    /// A gauge.
    Gauge(f64),
    /// A histogram: number of recordings, their sum, bucket boundaries.
    Histogram {
        /// Number of recordings.
        count: u64,
        /// Sum of recorded values.
        sum: f64,
        /// Explicit bucket boundaries.
        bounds: Vec<f64>,
    },
}

/// Assertion helpers on finished spans.
pub trait SpanDataExt {
    /// The attribute `key`.
    fn attr(&self, key: &str) -> Option<&Value>;
    /// The attribute `key` rendered as text.
    fn attr_str(&self, key: &str) -> Option<String>;
    /// The trace id as 32 hex digits.
    fn trace_id(&self) -> String;
    /// The span id as 16 hex digits.
    fn span_id(&self) -> String;
    /// The parent span id as 16 hex digits (`0000000000000000` for roots).
    fn parent_id(&self) -> String;
    /// The span kind.
    fn kind(&self) -> SpanKind;
    /// Whether the span's status is Error.
    fn is_error(&self) -> bool;
}

impl SpanDataExt for SpanData {
    fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn attr_str(&self, key: &str) -> Option<String> {
        self.attr(key).map(|v| v.to_string())
    }

    fn trace_id(&self) -> String {
        self.span_context.trace_id().to_string()
    }

    fn span_id(&self) -> String {
        self.span_context.span_id().to_string()
    }

    fn parent_id(&self) -> String {
        self.parent_span_id.to_string()
    }

    fn kind(&self) -> SpanKind {
        self.span_kind.clone()
    }

    fn is_error(&self) -> bool {
        matches!(self.status, opentelemetry::trace::Status::Error { .. })
    }
}

/// The trace id of the span in `cx`, as hex (handy when a test starts its own root span).
pub fn trace_id_of(cx: &opentelemetry::Context) -> String {
    cx.span().span_context().trace_id().to_string()
}
