//! The Kafka scenarios against rdkafka's in-process mock cluster (every test run), plus the
//! failure cases only a mock broker can stage.

mod support;

use std::time::Duration;

use opentelemetry::trace::Status;
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use support::{Broker, assert_attr, attr, install, scenarios, unique, within};
use tracewire_kafka::{TracedConsumer, TracedProducer};

#[tokio::test]
async fn produce_then_process_in_one_trace() {
    scenarios::produce_then_process_in_one_trace(&Broker::mock()).await;
}

#[tokio::test]
async fn hand_set_traceparent_is_picked_up() {
    scenarios::hand_set_traceparent_is_picked_up(&Broker::mock()).await;
}

#[tokio::test]
async fn bad_headers_are_survived_and_counted() {
    scenarios::bad_headers_are_survived_and_counted(&Broker::mock()).await;
}

#[tokio::test]
async fn batch_links_every_record() {
    scenarios::batch_links_every_record(&Broker::mock()).await;
}

#[tokio::test]
async fn retry_topic_keeps_one_trace() {
    scenarios::retry_topic_keeps_one_trace(&Broker::mock()).await;
}

#[tokio::test]
async fn dead_letter_after_max_attempts() {
    scenarios::dead_letter_after_max_attempts(&Broker::mock()).await;
}

/// The broker goes away after the first record: the next send fails with an error (no
/// panic), its producer span ends with `error.type`, and every span that started has ended.
#[tokio::test]
async fn broker_going_away_fails_the_send_and_ends_its_span() {
    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("flaky");
    broker.create_topic(&topic, 1).await;
    let mut config = broker.producer_config();
    config.set("message.timeout.ms", "2000");
    let producer = TracedProducer::from_config(&config).unwrap();
    support::deliver(&producer, &topic, "one").await;

    broker.mock_cluster().unwrap().broker_down(1).unwrap();
    let sends = support::assert_send_fails_without_broker(&producer, &topic, &telemetry).await;
    assert_eq!(attr(&sends[0].attributes, "error.type"), None);
    assert!(matches!(sends[1].status, Status::Error { .. }));
    assert_eq!(attr(&sends[1].attributes, "messaging.kafka.offset"), None);
    let failed = [
        ("messaging.destination.name", topic.as_str()),
        ("error.type", "MessageTimedOut"),
    ];
    assert_eq!(
        telemetry.counter("messaging.client.sent.messages", &failed),
        1
    );
    assert_eq!(
        telemetry.counter(
            "messaging.client.sent.messages",
            &[("messaging.destination.name", topic.as_str())]
        ),
        2
    );
}

/// A send future dropped before its delivery report still ends its span.
#[tokio::test]
async fn cancelled_send_ends_its_span() {
    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("cancel");
    broker.create_topic(&topic, 1).await;
    broker.mock_cluster().unwrap().broker_down(1).unwrap();
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    let send = producer.send_record(
        FutureRecord::<str, str>::to(&topic).payload("x"),
        Duration::from_secs(1),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), send)
            .await
            .is_err(),
        "no delivery report while the broker is down"
    );
    let span = telemetry.span(&format!("send {topic}"));
    assert!(span.span_context.is_valid());
    assert_eq!(attr(&span.attributes, "messaging.kafka.offset"), None);
}

/// The broker goes away while a consumer is reading: `recv` surfaces the error instead of
/// hanging or panicking, and the record processed before is fully recorded.
#[tokio::test]
async fn broker_going_away_mid_stream_surfaces_a_consumer_error() {
    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("stream");
    broker.create_topic(&topic, 1).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    support::deliver(&producer, &topic, "one").await;
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g"))).unwrap();
    support::assign(consumer.inner(), &[(&topic, 1)]);
    let msg = within(30, "the record", consumer.recv()).await.unwrap();
    consumer
        .process(&msg, async { Ok::<(), std::io::Error>(()) })
        .await
        .unwrap();
    drop(msg);

    broker.mock_cluster().unwrap().broker_down(1).unwrap();
    let err = within(60, "a consumer error", consumer.recv())
        .await
        .map(|m| m.offset())
        .expect_err("the broker is gone");
    // librdkafka reports the lost connection first or the state of all brokers first,
    // depending on timing: both say the broker is gone.
    assert!(
        matches!(
            err,
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure
            )
        ),
        "{err:?}"
    );
    assert_eq!(telemetry.spans_named(&format!("process {topic}")).len(), 1);
}

/// The wrappers' futures are `Send`: producing, receiving and processing run on a spawned task
/// of a multi-threaded runtime, and the trace still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrappers_run_on_spawned_tasks() {
    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("spawned");
    broker.create_topic(&topic, 1).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g"))).unwrap();
    support::assign(consumer.inner(), &[(&topic, 1)]);
    let task_topic = topic.clone();
    let task = tokio::spawn(async move {
        producer
            .send_record(
                FutureRecord::<str, str>::to(&task_topic).payload("x"),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
        let msg = consumer.recv().await?;
        consumer
            .process(&msg, async {
                tokio::task::yield_now().await;
                Ok::<_, KafkaError>(())
            })
            .await
            .map(|processed| processed.outcome())
    });
    assert_eq!(
        within(30, "the spawned task", task).await.unwrap().unwrap(),
        tracewire_kafka::Outcome::Ack
    );
    let send = telemetry.span(&format!("send {topic}"));
    let process = telemetry.span(&format!("process {topic}"));
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(
        process.span_context.trace_id(),
        send.span_context.trace_id()
    );
}

/// A failing handler sets `error.type` and an error status, and without retry topics the
/// record is rejected (its offset committed); a commit the broker refuses is returned and
/// recorded with the broker's error code.
#[tokio::test]
async fn handler_errors_and_refused_commits_are_recorded() {
    use rdkafka::consumer::CommitMode;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("refused");
    let group = unique("g");
    broker.create_topic(&topic, 1).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    for payload in ["first", "second"] {
        support::deliver(&producer, &topic, payload).await;
    }
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&group))
        .unwrap()
        .with_commit(Some(CommitMode::Sync));
    support::assign(consumer.inner(), &[(&topic, 1)]);

    let first = within(30, "the first record", consumer.recv())
        .await
        .unwrap();
    let processed = consumer
        .process(&first, async { Err::<(), _>(scenarios::PaymentDeclined) })
        .await
        .expect("committed");
    assert_eq!(
        processed.outcome(),
        tracewire_kafka::Outcome::Reject,
        "without retry topics a failed record is rejected"
    );
    assert_eq!(
        processed.error().map(ToString::to_string).as_deref(),
        Some("payment declined")
    );
    drop(first);

    broker.mock_cluster().unwrap().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 5],
    );
    let second = within(30, "the second record", consumer.recv())
        .await
        .unwrap();
    let err = consumer
        .process(&second, async { Ok::<(), scenarios::PaymentDeclined>(()) })
        .await
        .expect_err("the broker refused the commit");
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "{err:?}"
    );

    let spans = telemetry.spans_named(&format!("process {topic}"));
    assert_eq!(spans.len(), 2);
    assert_attr(&spans[0], "error.type", "PaymentDeclined");
    assert_eq!(spans[0].status, Status::error("payment declined"));
    assert_attr(&spans[0], "messaging.message.outcome", "reject");
    assert_attr(&spans[1], "messaging.message.outcome", "ack");
    assert_attr(&spans[1], "error.type", "GroupAuthorizationFailed");
    assert!(matches!(spans[1].status, Status::Error { .. }));
    assert_eq!(
        telemetry
            .histogram_count(
                "messaging.process.duration",
                &[("error.type", "PaymentDeclined")]
            )
            .0,
        1
    );
}

/// A `BaseProducer`-style producer (here a `ThreadedProducer`) uses `ProducerTelemetry`: the
/// send span travels as the delivery opaque and is finished from the delivery callback.
#[tokio::test]
async fn producer_telemetry_serves_other_producers() {
    use rdkafka::ClientContext;
    use rdkafka::config::FromClientConfigAndContext;
    use rdkafka::producer::{
        BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
    };
    use tracewire_kafka::{ProducerTelemetry, SendSpan};

    struct Delivered;
    impl ClientContext for Delivered {}
    impl ProducerContext for Delivered {
        type DeliveryOpaque = Box<SendSpan>;
        fn delivery(&self, result: &DeliveryResult<'_>, span: Box<SendSpan>) {
            match result {
                Ok(msg) => span.delivered(msg.partition(), msg.offset()),
                Err((err, _)) => span.failed(err),
            }
        }
    }

    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("threaded");
    broker.create_topic(&topic, 1).await;
    let producer: ThreadedProducer<Delivered> =
        ThreadedProducer::from_config_and_context(&broker.producer_config(), Delivered).unwrap();
    let instruments = ProducerTelemetry::new();
    let span = instruments.start_send(&topic, None, 5);
    let headers = span.headers::<rdkafka::message::OwnedHeaders>(None);
    producer
        .send(
            BaseRecord::<str, str, Box<SendSpan>>::with_opaque_to(&topic, Box::new(span))
                .payload("hello")
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g"))).unwrap();
    support::assign(consumer.inner(), &[(&topic, 1)]);
    let msg = within(30, "the record", consumer.recv()).await.unwrap();
    consumer
        .process(&msg, async { Ok::<(), KafkaError>(()) })
        .await
        .unwrap();

    let send = telemetry.span(&format!("send {topic}"));
    let process = telemetry.span(&format!("process {topic}"));
    assert_attr(&send, "messaging.kafka.offset", 0i64);
    assert_attr(&send, "messaging.destination.partition.id", "0");
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(
        telemetry.counter(
            "messaging.client.sent.messages",
            &[("messaging.destination.name", topic.as_str())]
        ),
        1
    );
}

#[tokio::test]
async fn send_to_a_missing_topic_fails_promptly_as_one_error_type() {
    scenarios::send_to_a_missing_topic_fails_promptly_as_one_error_type(&Broker::mock()).await;
}

#[tokio::test]
async fn batch_over_partitions_commits_each() {
    scenarios::batch_over_partitions_commits_each(&Broker::mock()).await;
}

#[tokio::test]
async fn manual_outcome_leaves_committing_to_the_handler() {
    scenarios::manual_outcome_leaves_committing_to_the_handler(&Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_reports_its_worst_outcome() {
    scenarios::failed_batch_reports_its_worst_outcome(&Broker::mock()).await;
}
