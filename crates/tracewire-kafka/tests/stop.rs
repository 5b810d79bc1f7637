//! `stop` gives control back within its timeout whatever the broker does: a consumer that has
//! joined its group and processed a record leaves it cleanly while the broker is up, and still
//! returns in time when the broker has just gone down — several times in a row, against
//! rdkafka's in-process mock cluster. The same with real brokers killed and paused is in the
//! workspace test `tests/consumer_stop.rs`.

mod support;

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use support::{Broker, install, unique, within};
use tracewire_kafka::{StopError, TracedConsumer, TracedProducer, stop};

/// The timeout given to `stop`, and the generous bound on how long it may take to return.
const TIMEOUT: Duration = Duration::from_secs(1);
const BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_in_time_with_the_broker_up_or_gone() {
    let _telemetry = install();
    for round in 0..3 {
        for broker_down in [false, true] {
            let broker = Broker::mock();
            let topic = unique("stop");
            broker.create_topic(&topic, 1).await;
            let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
            support::deliver(&producer, &topic, "one").await;
            let consumer =
                TracedConsumer::from_config(&broker.consumer_config(&unique("stop-group")))
                    .unwrap();
            consumer.inner().subscribe(&[&topic]).unwrap();
            {
                let msg = within(30, "the record", consumer.recv()).await.unwrap();
                let processed = consumer
                    .process(&msg, async { Ok::<(), std::convert::Infallible>(()) })
                    .await
                    .expect("committed");
                assert_eq!(processed.outcome(), tracewire_kafka::Outcome::Ack);
            }
            if broker_down {
                broker.mock_cluster().unwrap().broker_down(1).unwrap();
            }
            let started = Instant::now();
            let result = stop(consumer, TIMEOUT).await;
            let took = started.elapsed();
            let case = format!("round {round}, broker down: {broker_down}");
            assert!(took < BOUND, "{case}: stop took {took:?}");
            match result {
                Ok(_) => {}
                Err(StopError::TimedOut { timeout }) => {
                    assert!(broker_down, "{case}: timed out with the broker up");
                    assert_eq!(timeout, TIMEOUT);
                }
                Err(other) => panic!("{case}: {other}"),
            }
        }
    }
}
