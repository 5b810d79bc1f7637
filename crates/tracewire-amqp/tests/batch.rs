//! Several deliveries processed together: one span linking every message.

mod support;

use std::convert::Infallible;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt};
use tracewire_amqp::Outcome;
use tracewire_test::Capture;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_span_links_every_message() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("batch");
    declare_kept_queue(&channel, &queue).await;

    // Three messages from three unrelated traces.
    let mut producers = Vec::new();
    for n in 0..3 {
        let root = root_span("order placed");
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                format!("order {n}").as_bytes(),
                BasicProperties::default(),
            )
            .with_context(root.clone())
            .await
            .expect("publish");
        producers.push(confirm.context().span().span_context().clone());
        confirm.await.expect("confirm");
    }

    let mut consumer = consume(&channel, &queue).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(next(&mut consumer).await);
    }
    let tags: Vec<u64> = deliveries.iter().map(|d| d.delivery_tag).collect();
    let processed = consumer
        .process_batch(&deliveries, async {
            assert_eq!(deliveries.len(), 3);
            tracing::info!(count = deliveries.len(), "bulk insert");
            Ok::<(), Infallible>(())
        })
        .await
        .expect("ack all");
    assert_eq!(processed.outcome(), Outcome::Ack);

    let span = capture.span(&format!("process {queue}"));
    assert_eq!(span.span_kind, SpanKind::Consumer);
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    for p in &producers {
        assert_ne!(span.span_context.trace_id(), p.trace_id());
    }
    assert_eq!(attr(&span, "messaging.batch.message_count"), i(3));
    assert_eq!(attr(&span, "messaging.operation.type"), s("process"));
    assert_eq!(attr(&span, "messaging.destination.name"), s(&queue));
    assert_eq!(attr(&span, "messaging.consumer.group.name"), s(&queue));
    assert_eq!(attr(&span, "messaging.message.outcome"), s("ack"));
    let links = &span.links.links;
    assert_eq!(links.len(), 3);
    for ((link, producer), tag) in links.iter().zip(&producers).zip(&tags) {
        assert_eq!(link.span_context.trace_id(), producer.trace_id());
        assert_eq!(link.span_context.span_id(), producer.span_id());
        assert_eq!(
            attr_set(&link.attributes),
            attr_set(&[opentelemetry::KeyValue::new(
                "messaging.rabbitmq.message.delivery_tag",
                i64::try_from(*tag).unwrap()
            )])
        );
    }

    let logs = capture.logs();
    let line = logs
        .iter()
        .find(|l| l["message"] == "bulk insert")
        .expect("log line");
    assert_eq!(
        line["trace_id"],
        span.span_context.trace_id().to_string().as_str()
    );

    let processed = points(
        &capture,
        "messaging.process.duration",
        &[("messaging.destination.name", queue.as_str())],
    );
    assert_eq!(processed.len(), 1);
    assert_eq!(processed[0].count_or_value(), 1.0);

    // Everything was acked: nothing returns to the queue when the consumer goes away.
    assert_eq!(cancel_and_count(&channel, consumer, &queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_span_is_a_child_of_the_current_context() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("batch.child");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    publish_confirmed(&channel, &queue, b"x").await;
    let mut consumer = consume(&channel, &queue).await;
    let delivery = next(&mut consumer).await;
    let poll = root_span("poll loop");
    consumer
        .process_batch(&[delivery], async { Ok::<_, Infallible>(Outcome::Requeue) })
        .with_context(poll.clone())
        .await
        .expect("requeue");
    let span = capture.span(&format!("process {queue}"));
    assert_eq!(span.span_context.trace_id().to_string(), hex_trace(&poll));
    assert_eq!(span.parent_span_id.to_string(), hex_span(&poll));
    assert_eq!(attr(&span, "messaging.message.outcome"), s("requeue"));
    // Requeued: it comes back.
    assert!(next(&mut consumer).await.redelivered());
}
