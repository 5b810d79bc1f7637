//! The Kafka scenarios against a standalone broker: tansu, an Apache Kafka compatible broker
//! independent of librdkafka, on 127.0.0.1:9092. Start it with `scripts/ensure-tansu`; these
//! tests fail (they do not skip) when it is not there.

mod support;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use support::{Broker, install, scenarios, unique, within};
use tracewire_kafka::{TracedConsumer, TracedProducer};

#[tokio::test]
async fn send_to_a_missing_topic_fails_promptly_as_one_error_type() {
    scenarios::send_to_a_missing_topic_fails_promptly_as_one_error_type(&Broker::tansu()).await;
}

#[tokio::test]
async fn produce_then_process_in_one_trace() {
    scenarios::produce_then_process_in_one_trace(&Broker::tansu()).await;
}

#[tokio::test]
async fn hand_set_traceparent_is_picked_up() {
    scenarios::hand_set_traceparent_is_picked_up(&Broker::tansu()).await;
}

#[tokio::test]
async fn bad_headers_are_survived_and_counted() {
    scenarios::bad_headers_are_survived_and_counted(&Broker::tansu()).await;
}

#[tokio::test]
async fn batch_links_every_record() {
    scenarios::batch_links_every_record(&Broker::tansu()).await;
}

#[tokio::test]
async fn retry_topic_keeps_one_trace() {
    scenarios::retry_topic_keeps_one_trace(&Broker::tansu()).await;
}

#[tokio::test]
async fn dead_letter_after_max_attempts() {
    scenarios::dead_letter_after_max_attempts(&Broker::tansu()).await;
}

/// A real broker process dies mid-stream: the consumer's `recv` and the next send surface
/// errors (no panic), and every producer span that started has ended.
#[tokio::test]
async fn broker_process_dying_mid_stream_surfaces_errors() {
    let telemetry = install();
    let mut tansu = tracewire_test::PrivateTansu::start();
    let broker = Broker::at(&tansu.bootstrap());
    let topic = unique("dying");
    broker.create_topic(&topic, 1).await;
    let mut config = broker.producer_config();
    config.set("message.timeout.ms", "3000");
    let producer = TracedProducer::from_config(&config).unwrap();
    support::deliver(&producer, &topic, "one").await;
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g"))).unwrap();
    support::assign(consumer.inner(), &[(&topic, 1)]);
    let msg = within(30, "the record", consumer.recv()).await.unwrap();
    assert_eq!(msg.payload(), Some(&b"one"[..]));
    drop(msg);

    tansu.stop();
    let consumer_err = within(60, "a consumer error", consumer.recv())
        .await
        .map(|m| m.offset())
        .expect_err("the broker is gone");
    assert!(
        matches!(consumer_err, KafkaError::MessageConsumption(_)),
        "{consumer_err:?}"
    );
    support::assert_send_fails_without_broker(&producer, &topic, &telemetry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_reports_its_worst_outcome() {
    scenarios::failed_batch_reports_its_worst_outcome(&Broker::tansu()).await;
}
