//! Test support: in-memory capture of spans, metrics and JSON log lines, and the brokers the
//! scenarios run against (rdkafka's in-process mock cluster, or a standalone tansu broker).

#![allow(dead_code, unreachable_pub)]

pub mod scenarios;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::{KeyValue, Value, global};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing_subscriber::layer::SubscriberExt;

/// Spans, metrics and log lines captured in memory.
pub struct Telemetry {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
    logs: LogBuffer,
}

/// Installs the global tracer and meter providers, the W3C propagators and a JSON log
/// subscriber writing into memory. Call it before building producers and consumers.
pub fn install() -> Telemetry {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    global::set_tracer_provider(tracer_provider);

    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    global::set_meter_provider(meter_provider.clone());

    // What `tracewire::init()` installs by default.
    global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());

    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracewire_core::logs::JsonLayer::new().with_writer(logs.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per test process");

    Telemetry {
        spans,
        metrics,
        meter_provider,
        logs,
    }
}

impl Telemetry {
    /// Every span ended so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.get_finished_spans().expect("span exporter")
    }

    /// The spans called `name`, in the order they ended.
    pub fn spans_named(&self, name: &str) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// The one span called `name`.
    pub fn span(&self, name: &str) -> SpanData {
        let mut spans = self.spans_named(name);
        let names: Vec<String> = self.spans().iter().map(|s| s.name.to_string()).collect();
        assert_eq!(
            spans.len(),
            1,
            "expected one span {name:?}, spans: {names:?}"
        );
        spans.remove(0)
    }

    /// The JSON log lines written so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.logs.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    fn collect(&self) -> Vec<opentelemetry_sdk::metrics::data::ResourceMetrics> {
        self.metrics.reset();
        self.meter_provider.force_flush().expect("metric flush");
        self.metrics
            .get_finished_metrics()
            .expect("metric exporter")
    }

    /// Sum of the `u64` counter `name` over the data points carrying all of `attributes`.
    pub fn counter(&self, name: &str, attributes: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        for rm in self.collect() {
            for sm in rm.scope_metrics() {
                for metric in sm.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                        total += sum
                            .data_points()
                            .filter(|dp| has_all(dp.attributes(), attributes))
                            .map(|dp| dp.value())
                            .sum::<u64>();
                    }
                }
            }
        }
        total
    }

    /// Number of recordings of the `f64` histogram `name` over the data points carrying all of
    /// `attributes`, and the unit of the histogram.
    pub fn histogram_count(&self, name: &str, attributes: &[(&str, &str)]) -> (u64, String) {
        let mut total = 0;
        let mut unit = String::new();
        for rm in self.collect() {
            for sm in rm.scope_metrics() {
                for metric in sm.metrics().filter(|m| m.name() == name) {
                    unit = metric.unit().to_owned();
                    if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                        total += h
                            .data_points()
                            .filter(|dp| has_all(dp.attributes(), attributes))
                            .map(|dp| dp.count())
                            .sum::<u64>();
                    }
                }
            }
        }
        (total, unit)
    }
}

fn has_all<'a>(dp: impl Iterator<Item = &'a KeyValue>, wanted: &[(&str, &str)]) -> bool {
    let dp: Vec<&KeyValue> = dp.collect();
    wanted.iter().all(|(k, v)| {
        dp.iter()
            .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
    })
}

/// The value of attribute `key` on a span (or link, event).
pub fn attr(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// Asserts attribute `key` has `value`.
#[track_caller]
pub fn assert_attr(span: &SpanData, key: &str, value: impl Into<Value>) {
    assert_eq!(
        attr(&span.attributes, key),
        Some(value.into()),
        "attribute {key} of span {:?}; attributes: {:?}",
        span.name,
        span.attributes
    );
}

pub fn trace_id(span: &SpanData) -> TraceId {
    span.span_context.trace_id()
}

pub fn span_id(span: &SpanData) -> SpanId {
    span.span_context.span_id()
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// A broker to run scenarios against.
pub struct Broker {
    bootstrap: String,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

/// Where the standalone broker listens (`scripts/ensure-tansu` starts it there).
pub const TANSU_ADDR: &str = "127.0.0.1:9092";

impl Broker {
    /// An in-process mock cluster with one broker.
    pub fn mock() -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster");
        Self {
            bootstrap: cluster.bootstrap_servers(),
            mock: Some(cluster),
        }
    }

    /// The standalone tansu broker on 127.0.0.1:9092. Fails the test when nothing listens.
    pub fn tansu() -> Self {
        let addr: SocketAddr = TANSU_ADDR.parse().unwrap();
        if let Err(err) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            panic!(
                "no Kafka broker on {TANSU_ADDR} ({err}). These tests need the standalone tansu \
                 broker: run `scripts/ensure-tansu` first (it installs and starts it)."
            );
        }
        Self {
            bootstrap: TANSU_ADDR.to_owned(),
            mock: None,
        }
    }

    /// A broker already listening on `bootstrap`.
    pub fn at(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            mock: None,
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self.mock.as_ref()
    }

    /// Creates `topic` with `partitions` partitions and waits until it exists.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        if let Some(cluster) = &self.mock {
            cluster
                .create_topic(topic, partitions, 1)
                .expect("mock topic");
            return;
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic request");
        for result in results {
            result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code:?}"));
        }
    }

    /// Producer settings for tests: no batching delay, bounded delivery time.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "0")
            .set("message.timeout.ms", "15000");
        config
    }

    /// Consumer settings for tests: manual commits, short session timeout.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("fetch.wait.max.ms", "50");
        config
    }
}

/// A topic name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Assigns partitions `0..partitions` of every topic to `consumer`, from the beginning (no
/// group join, so tests do not wait for a rebalance).
pub fn assign<C: Consumer>(consumer: &C, topics: &[(&str, i32)]) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).expect("assign");
}

/// Awaits `future`, failing the test after `secs` seconds.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s waiting for {what}"))
}

/// With the broker gone, a send fails with `MessageTimedOut` (never a panic), and its producer
/// span — the second `send {topic}` span after one successful send — still ends, carrying
/// `error.type`. Returns the ended producer spans.
pub async fn assert_send_fails_without_broker(
    producer: &tracewire_kafka::TracedProducer,
    topic: &str,
    telemetry: &Telemetry,
) -> Vec<SpanData> {
    use rdkafka::error::KafkaError;
    use rdkafka::producer::FutureRecord;
    use rdkafka::types::RDKafkaErrorCode;

    let err = within(
        30,
        "the failed delivery",
        producer.send(
            FutureRecord::<str, str>::to(topic).payload("two"),
            std::time::Duration::from_secs(1),
        ),
    )
    .await
    .map(|d| d.offset)
    .expect_err("no broker to deliver to")
    .0;
    assert_eq!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
    );
    let sends = telemetry.spans_named(&format!("send {topic}"));
    assert_eq!(sends.len(), 2, "both producer spans ended");
    assert_attr(&sends[1], "error.type", "MessageTimedOut");
    sends
}
