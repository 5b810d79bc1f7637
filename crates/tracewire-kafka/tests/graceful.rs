//! A consumer service that stops gracefully (the loop `docs/kafka.md` shows): stop consuming,
//! finish the record in hand, commit, close the consumer.

mod support;

use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset};
use support::{Broker, assert_attr, install, unique, within};
use tokio::sync::oneshot;
use tracewire_kafka::{TracedConsumer, TracedMessage, TracedProducer};

/// The consumer loop of a service: processes records until `shutdown` resolves, then stops.
/// A record in hand is finished (and its offset committed) before the loop looks at
/// `shutdown` again.
async fn serve<H, Fut>(
    consumer: TracedConsumer,
    shutdown: impl Future<Output = ()>,
    handle: H,
) -> KafkaResult<()>
where
    H: for<'m> Fn(&TracedMessage<'m>) -> Fut,
    Fut: Future<Output = Result<(), std::io::Error>>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            received = consumer.recv() => {
                let msg = received?;
                consumer.process(&msg, handle(&msg)).await?;
            }
        }
    }
    // Commits made with `CommitMode::Async` may still be in flight: commit the position
    // synchronously (nothing consumed yet is not an error).
    match consumer.inner().commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(err) => return Err(err),
    }
    // Closing the consumer leaves the group at once, so the partitions move to another member
    // without waiting for the session to time out.
    consumer.inner().unsubscribe();
    drop(consumer);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_the_record_in_hand_and_commits_it() {
    let telemetry = install();
    let broker = Broker::mock();
    let topic = unique("graceful");
    let group = unique("g");
    broker.create_topic(&topic, 1).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    for payload in ["one", "two", "three"] {
        support::deliver(&producer, &topic, payload).await;
    }

    let consumer = TracedConsumer::from_config(&broker.consumer_config(&group))
        .unwrap()
        .with_commit(Some(CommitMode::Async));
    support::assign(consumer.inner(), &[(&topic, 1)]);
    let (stop, stopped) = oneshot::channel::<()>();
    let stop = std::sync::Mutex::new(Some(stop));
    let served = serve(
        consumer,
        async {
            let _ = stopped.await;
        },
        |msg| {
            // The stop request arrives while the first record is in hand.
            if let Some(stop) = stop.lock().unwrap().take() {
                let _ = stop.send(());
            }
            let offset = msg.offset();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tracing::info!(offset, "finished");
                Ok(())
            }
        },
    );
    within(20, "the service to stop", served)
        .await
        .expect("a clean stop");

    let spans = telemetry.spans_named(&format!("process {topic}"));
    assert_eq!(spans.len(), 1, "only the record in hand was processed");
    assert_attr(&spans[0], "messaging.message.outcome", "ack");
    assert_attr(&spans[0], "messaging.kafka.offset", 0i64);

    // The next member of the group starts after the finished record.
    let next = TracedConsumer::from_config(&broker.consumer_config(&group)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = next
        .inner()
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        Offset::Offset(1)
    );
}
