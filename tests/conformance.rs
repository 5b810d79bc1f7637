//! The messaging conformance scenarios (`tracewire_test::conformance`) on RabbitMQ (the broker
//! on 127.0.0.1:5672) and on Kafka, twice: rdkafka's in-process mock cluster and the standalone
//! tansu broker (`KAFKA_BROKERS`, 127.0.0.1:9092 by default): written against the
//! same producer and consumer calls (`TracedProducer::send(Message)`, `recv`, `process`,
//! `process_batch`, `with_retry(policy)`), both must leave the same spans — names, kinds, parents, statuses, events, attribute keys apart from the
//! broker's own — and the same metric attribute keys.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use tracewire::amqp::lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use tracewire::amqp::lapin::types::{AMQPValue, FieldTable};
use tracewire::amqp::lapin::{Connection, ConnectionProperties};
use tracewire::amqp::{RetryPolicy, RetryQueue, TracedChannel};
use tracewire::kafka::rdkafka::config::ClientConfig;
use tracewire::kafka::rdkafka::consumer::{CommitMode, Consumer};
use tracewire::kafka::rdkafka::mocking::MockCluster;
use tracewire::kafka::rdkafka::producer::DefaultProducerContext;
use tracewire::kafka::rdkafka::{Offset, TopicPartitionList};
use tracewire::kafka::{RetryTopics, TracedConsumer, TracedProducer};
use tracewire_core::messaging::{Message, Outcome};
use tracewire_test::Capture;
use tracewire_test::conformance::{self, Broker, Handler, Scenario};

/// How long a processing may take before the harness drops it (the `Cancel` handler).
const PROCESS_LIMIT: Duration = Duration::from_secs(2);

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn policy(dead_letter: &str) -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .dead_letter(dead_letter)
}

/// Runs a processing the way a service's loop would, telling a panic and a cancellation
/// (dropped after [`PROCESS_LIMIT`]) apart from a settled outcome.
async fn settle<F, E>(processing: F) -> Option<Outcome>
where
    F: std::future::Future<
            Output = Result<tracewire_core::messaging::Processed<conformance::HandlerFailed>, E>,
        >,
    E: std::fmt::Debug,
{
    match tokio::time::timeout(PROCESS_LIMIT, AssertUnwindSafe(processing).catch_unwind()).await {
        Err(_cancelled) => None,
        Ok(Err(_panicked)) => None,
        Ok(Ok(settled)) => Some(settled.expect("settled").outcome()),
    }
}

struct Rabbit {
    _connection: Connection,
    producer: tracewire::amqp::TracedProducer,
    consumer: tracewire::amqp::TracedConsumer,
    names: [String; 3],
}

impl Rabbit {
    async fn new() -> Self {
        let addr = std::env::var("AMQP_ADDR")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let connection = Connection::connect(&addr, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {addr} (scripts/ensure-rabbitmq): {e}"));
        let raw = connection.create_channel().await.expect("channel");
        raw.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let channel = TracedChannel::new(raw);
        let work = unique("conformance.work");
        let dead = format!("{work}.dead");
        let retry = RetryQueue::new(&work, policy(&dead)).expect("names fit");
        // The queues go away a minute after their last use.
        let expiring = |mut args: FieldTable| {
            args.insert("x-expires".into(), AMQPValue::LongUInt(60_000));
            args
        };
        for (name, args) in [
            (work.clone(), FieldTable::default()),
            (retry.retry_queue().to_owned(), retry.arguments()),
            (dead.clone(), FieldTable::default()),
        ] {
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::default(),
                    expiring(args),
                )
                .await
                .unwrap_or_else(|e| panic!("declare {name}: {e}"));
        }
        let names = [work.clone(), retry.retry_queue().to_owned(), dead];
        let consumer = channel
            .basic_consume(
                work.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume")
            .with_retry(retry);
        Self {
            _connection: connection,
            producer: tracewire::amqp::TracedProducer::new(channel),
            consumer,
            names,
        }
    }

    async fn next(&mut self) -> tracewire::amqp::TracedDelivery {
        tokio::time::timeout(Duration::from_secs(10), self.consumer.recv())
            .await
            .expect("a delivery within 10 s")
            .expect("the consumer is open")
            .expect("a delivery")
    }
}

impl Broker for Rabbit {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    fn destinations(&self) -> [&str; 3] {
        [&self.names[0], &self.names[1], &self.names[2]]
    }

    async fn publish(&mut self, body: &'static [u8]) {
        let sent = self
            .producer
            .send(Message::to(&self.names[0]).payload(body))
            .await
            .expect("sent");
        assert!(sent.confirmed());
    }

    async fn process(&mut self, handler: Handler) -> Option<Outcome> {
        let delivery = self.next().await;
        settle(self.consumer.process(&delivery, handler.run())).await
    }

    async fn process_batch(&mut self, n: usize, handler: Handler) -> Option<Outcome> {
        let mut batch = Vec::new();
        for _ in 0..n {
            batch.push(self.next().await);
        }
        settle(self.consumer.process_batch(&batch, handler.run())).await
    }
}

struct Kafka {
    producer: TracedProducer,
    consumer: TracedConsumer,
    names: [String; 3],
    _cluster: Option<MockCluster<'static, DefaultProducerContext>>,
}

/// Where the Kafka side runs.
#[derive(Clone, Copy, Debug)]
enum KafkaBroker {
    /// librdkafka's in-process mock cluster.
    Mock,
    /// The standalone tansu broker (`KAFKA_BROKERS`, default 127.0.0.1:9092, started by
    /// `scripts/ensure-tansu`).
    Tansu,
}

impl Kafka {
    async fn new(broker: KafkaBroker) -> Self {
        let work = unique("conformance.work");
        let names = [work.clone(), format!("{work}.retry"), format!("{work}.dlt")];
        let (cluster, bootstrap) = match broker {
            KafkaBroker::Mock => {
                let cluster = MockCluster::new(1).expect("mock cluster");
                for topic in &names {
                    cluster.create_topic(topic, 1, 1).expect("topic");
                }
                let bootstrap = cluster.bootstrap_servers();
                (Some(cluster), bootstrap)
            }
            KafkaBroker::Tansu => {
                let bootstrap =
                    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
                create_topics(&bootstrap, &names).await;
                (None, bootstrap)
            }
        };
        let producer = TracedProducer::from_config(
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "0")
                .set("message.timeout.ms", "10000"),
        )
        .expect("producer");
        let retry = RetryTopics::new(producer.clone(), &names[1], policy(&names[2]));
        let consumer = TracedConsumer::from_config(
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", unique("conformance"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "50"),
        )
        .expect("consumer")
        .with_commit(Some(CommitMode::Async))
        .with_retry(retry);
        let mut tpl = TopicPartitionList::new();
        for topic in &names[..2] {
            tpl.add_partition_offset(topic, 0, Offset::Beginning)
                .expect("partition");
        }
        consumer.inner().assign(&tpl).expect("assign");
        Self {
            producer,
            consumer,
            names,
            _cluster: cluster,
        }
    }
}

/// Creates `topics` on the broker at `bootstrap`, failing loudly when it is not there.
async fn create_topics(bootstrap: &str, topics: &[String]) {
    use tracewire::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use tracewire::kafka::rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no Kafka broker answered on {bootstrap} within 20 s: run scripts/ensure-tansu \
             (it installs and starts tansu)"
        )
    })
    .unwrap_or_else(|e| panic!("create topics on {bootstrap} (scripts/ensure-tansu): {e}"));
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code:?}"));
    }
}

impl Broker for Kafka {
    fn system(&self) -> &'static str {
        "kafka"
    }

    fn destinations(&self) -> [&str; 3] {
        [&self.names[0], &self.names[1], &self.names[2]]
    }

    async fn publish(&mut self, body: &'static [u8]) {
        self.producer
            .send(Message::to(&self.names[0]).payload(body))
            .await
            .expect("sent");
    }

    async fn process(&mut self, handler: Handler) -> Option<Outcome> {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.consumer.recv())
            .await
            .expect("a record within 10 s")
            .expect("a record");
        settle(self.consumer.process(&msg, handler.run())).await
    }

    async fn process_batch(&mut self, n: usize, handler: Handler) -> Option<Outcome> {
        let mut batch = Vec::new();
        for _ in 0..n {
            batch.push(
                tokio::time::timeout(Duration::from_secs(10), self.consumer.recv())
                    .await
                    .expect("a record within 10 s")
                    .expect("a record"),
            );
        }
        settle(self.consumer.process_batch(&batch, handler.run())).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_and_kafka_leave_the_same_telemetry() {
    let capture = Capture::install();
    for scenario in Scenario::ALL {
        let rabbit = conformance::run(scenario, &capture, &mut Rabbit::new().await).await;
        assert!(!rabbit.is_empty());
        for broker in [KafkaBroker::Mock, KafkaBroker::Tansu] {
            let kafka = conformance::run(scenario, &capture, &mut Kafka::new(broker).await).await;
            assert_eq!(
                rabbit, kafka,
                "{scenario:?}: RabbitMQ (left) and Kafka on {broker:?} (right) differ"
            );
        }
    }
    let rabbit = conformance::metric_shape(&capture, "rabbitmq");
    let kafka = conformance::metric_shape(&capture, "kafka");
    assert_eq!(rabbit, kafka, "metric attribute keys differ");
    for instrument in [
        "messaging.client.sent.messages",
        "messaging.client.operation.duration",
        "messaging.client.consumed.messages",
        "messaging.process.duration",
    ] {
        assert!(
            rabbit
                .iter()
                .any(|m| m.starts_with(&format!("{instrument} "))),
            "{instrument} missing from {rabbit:#?}"
        );
    }
    assert!(
        rabbit.contains(
            "messaging.process.duration {error.type=HandlerFailed, messaging.consumer.group.name, \
             messaging.destination.name, messaging.operation.name, messaging.operation.type, \
             messaging.system}"
        ),
        "{rabbit:#?}"
    );
}
