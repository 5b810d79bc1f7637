//! Test support: in-memory capture of spans, metrics and JSON log lines, and the brokers the
//! scenarios run against (rdkafka's in-process mock cluster, or a standalone tansu broker).

#![allow(dead_code, unreachable_pub)]

pub mod scenarios;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_sdk::trace::SpanData;
use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::topic_partition_list::TopicPartitionList;

/// The in-memory capture every tracewire test uses.
pub use tracewire_test::Capture as Telemetry;
pub use tracewire_test::attrs::{assert_attr, find as attr, span_id, trace_id};
pub use tracewire_test::trace_id_of;

/// Installs the global tracer and meter providers, the W3C propagators and a JSON log
/// subscriber writing into memory. Call it before building producers and consumers.
pub fn install() -> Telemetry {
    Telemetry::install()
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

/// The next `n` records of `consumer`, each within 30 s.
pub async fn recv_n(
    consumer: &tracewire_kafka::TracedConsumer,
    n: usize,
) -> Vec<tracewire_kafka::TracedMessage<'_>> {
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        records.push(within(30, "a record", consumer.recv()).await.unwrap());
    }
    records
}

/// Sends `payload` to `topic` and waits (at most 30 s) for its delivery report, failing the
/// test when the record is not delivered.
pub async fn deliver(producer: &tracewire_kafka::TracedProducer, topic: &str, payload: &str) {
    within(
        30,
        "delivery",
        producer.send(tracewire_kafka::Message::to(topic).payload(payload)),
    )
    .await
    .unwrap_or_else(|e| panic!("delivery to {topic}: {e}"));
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
        producer.send_record(
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
