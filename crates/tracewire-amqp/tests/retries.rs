//! Redelivery, delayed retries through a retry queue, and dead-lettering stay in one trace.

mod support;

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SpanData;
use tracewire_amqp::{ATTEMPT_HEADER, Outcome, RetryError, RetryPolicy, RetryQueue, TracedChannel};
use tracewire_test::Capture;

use support::*;

/// A handler error that retrying cannot fix.
#[derive(Debug)]
struct Poison;

impl fmt::Display for Poison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot parse")
    }
}

async fn publish_in(channel: &TracedChannel, queue: &str, root: &opentelemetry::Context) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"work",
            BasicProperties::default().with_message_id("job-7".into()),
        )
        .with_context(root.clone())
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_message_is_redelivered_in_the_same_trace() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("requeue");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let root = root_span("enqueue");
    publish_in(&channel, &queue, &root).await;

    let mut consumer = consume(&channel, &queue).await;
    let first = next(&mut consumer).await;
    assert!(!first.redelivered());
    let processed = consumer
        .process(&first, async { Ok::<_, Infallible>(Outcome::Requeue) })
        .await
        .expect("nack");
    assert_eq!(processed.outcome(), Outcome::Requeue);
    let second = next(&mut consumer).await;
    assert!(second.redelivered());
    consumer
        .process(&second, async { Ok::<(), Infallible>(()) })
        .await
        .expect("ack");

    let producer = capture.span(&format!("publish {queue}"));
    let spans = capture.spans_named(&format!("process {queue}"));
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_eq!(span.span_context.trace_id().to_string(), hex_trace(&root));
        assert_eq!(span.parent_span_id, producer.span_context.span_id());
        assert_eq!(attr(span, "messaging.message.attempt"), i(1));
    }
    assert_eq!(
        attr(&spans[0], "messaging.rabbitmq.message.redelivered"),
        b(false)
    );
    assert_eq!(attr(&spans[0], "messaging.message.outcome"), s("requeue"));
    assert!(!has_attr(&spans[0], "error.type"));
    assert_eq!(
        attr(&spans[1], "messaging.rabbitmq.message.redelivered"),
        b(true)
    );
    assert_eq!(attr(&spans[1], "messaging.message.outcome"), s("ack"));
    assert!(!has_attr(&spans[1], "error.type"));
    assert_eq!(
        total(
            &capture,
            "messaging.client.consumed.messages",
            &[("messaging.destination.name", queue.as_str())]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_redeliveries_count_attempts() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("quorum");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare quorum queue");
    let root = root_span("enqueue");
    publish_in(&channel, &queue, &root).await;

    let mut consumer = consume(&channel, &queue).await;
    for attempt in 1..=3u32 {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.attempt(), attempt);
        let outcome = if attempt < 3 {
            Outcome::Requeue
        } else {
            Outcome::Ack
        };
        consumer
            .process(&delivery, async { Ok::<_, Infallible>(outcome) })
            .await
            .expect("settle");
    }
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete quorum queue");

    let spans = capture.spans_named(&format!("process {queue}"));
    let attempts: Vec<_> = spans
        .iter()
        .map(|s| attr(s, "messaging.message.attempt"))
        .collect();
    assert_eq!(attempts, vec![i(1), i(2), i(3)]);
    let producer = capture.span(&format!("publish {queue}"));
    for span in &spans {
        assert_eq!(span.span_context.trace_id().to_string(), hex_trace(&root));
        assert_eq!(span.parent_span_id, producer.span_context.span_id());
    }
}

fn x_death_entry(headers: &FieldTable) -> FieldTable {
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
            Some(AMQPValue::FieldTable(entry)) => entry.clone(),
            other => panic!("x-death entry is {other:?}"),
        },
        other => panic!("x-death is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_message_keeps_its_context_and_x_death() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("dl.work");
    let dlq = unique("dl.dead");
    declare_queue(&channel, &dlq, FieldTable::default()).await;
    declare_queue(&channel, &queue, dead_letter_to(&dlq)).await;
    let root = root_span("enqueue");
    publish_in(&channel, &queue, &root).await;

    // Without a retry queue, a failed delivery is rejected: the work queue's dead-letter
    // exchange takes it.
    let mut work = consume(&channel, &queue).await;
    let failed = next(&mut work).await;
    let processed = work
        .process(&failed, async { Err::<(), _>(Poison) })
        .await
        .expect("reject");
    assert_eq!(processed.outcome(), Outcome::Reject);

    let mut dead = consume(&channel, &dlq).await;
    let delivery = next(&mut dead).await;
    let headers = delivery.properties.headers().clone().expect("headers");
    let death = x_death_entry(&headers);
    assert_eq!(header_text(&death, "queue"), Some(queue.clone()));
    assert_eq!(header_text(&death, "reason").as_deref(), Some("rejected"));
    let producer = capture.span(&format!("publish {queue}"));
    assert_eq!(
        delivery.context().span().span_context().span_id(),
        producer.span_context.span_id()
    );
    dead.process(&delivery, async { Ok::<(), Infallible>(()) })
        .await
        .expect("ack");

    let failed = capture.span(&format!("process {queue}"));
    let dead_span = capture.span(&format!("process {dlq}"));
    assert_eq!(attr(&failed, "messaging.message.outcome"), s("reject"));
    assert_eq!(attr(&failed, "error.type"), s("Poison"));
    assert_eq!(
        dead_span.span_context.trace_id().to_string(),
        hex_trace(&root)
    );
    assert_eq!(dead_span.parent_span_id, producer.span_context.span_id());
    assert_eq!(attr(&dead_span, "messaging.destination.name"), s(&dlq));
    assert_eq!(attr(&dead_span, "messaging.message.id"), s("job-7"));
}

fn one(spans: &[SpanData], name: &str, attempt: i64) -> SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name == name
                && s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "messaging.message.attempt" && kv.value == i(attempt)
                })
        })
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "{name} attempt {attempt}: {found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_queue_keeps_one_causal_chain_and_counts_attempts() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("retry.work");
    let dlq = unique("retry.dead");
    declare_queue(&channel, &dlq, FieldTable::default()).await;
    declare_queue(&channel, &queue, dead_letter_to(&dlq)).await;
    let retry = RetryQueue::new(
        &queue,
        RetryPolicy::new()
            .max_attempts(3)
            .backoff(Duration::from_millis(200), Duration::from_millis(400)),
    )
    .expect("names fit");
    assert_eq!(retry.retry_queue(), format!("{queue}.retry"));
    retry
        .declare(
            &channel,
            QueueDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
        )
        .await
        .expect("declare retry queue");

    let root = root_span("enqueue");
    publish_in(&channel, &queue, &root).await;

    // Every attempt fails; the third one is the last allowed and goes to the dead letters.
    let mut consumer = consume(&channel, &queue).await.with_retry(retry.clone());
    for attempt in 1..=3u32 {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.attempt(), attempt);
        if attempt > 1 {
            // It came back through the retry queue's dead-lettering.
            let headers = delivery.properties.headers().clone().expect("headers");
            let death = x_death_entry(&headers);
            assert_eq!(header_text(&death, "reason").as_deref(), Some("expired"));
            assert_eq!(
                header_text(&death, "queue"),
                Some(retry.retry_queue().to_owned())
            );
        }
        let processed = consumer
            .process(&delivery, async {
                Err::<(), _>(std::io::Error::other("payment service unavailable"))
            })
            .await
            .expect("settle");
        // Past the last attempt, without a dead-letter queue in the policy: rejected, and the
        // work queue's dead-letter exchange takes it.
        let expected = if attempt < 3 {
            Outcome::Retry
        } else {
            Outcome::Reject
        };
        assert_eq!(processed.outcome(), expected);
    }

    let mut dead = consume(&channel, &dlq).await;
    let last = next(&mut dead).await;
    let headers = last.properties.headers().clone().expect("headers");
    assert_eq!(header_text(&headers, ATTEMPT_HEADER).as_deref(), Some("3"));
    assert_eq!(
        header_text(&x_death_entry(&headers), "queue"),
        Some(queue.clone())
    );
    assert_eq!(last.attempt(), 3);
    dead.process(&last, async { Ok::<(), Infallible>(()) })
        .await
        .expect("ack");
    channel
        .queue_delete(retry.retry_queue().into(), QueueDeleteOptions::default())
        .await
        .expect("delete retry queue");

    // producer → attempt 1 → retry publish (attempt 2) → attempt 2 → retry publish (attempt 3)
    // → attempt 3 (reject) → dead-letter processing: one trace, one causal chain.
    let spans = capture.spans();
    let trace = hex_trace(&root);
    for span in spans.iter().filter(|s| s.name != "enqueue") {
        assert_eq!(
            span.span_context.trace_id().to_string(),
            trace,
            "{}",
            span.name
        );
    }
    let work_process = format!("process {queue}");
    let retry_publish = format!("publish {}", retry.retry_queue());
    let producer = capture.span(&format!("publish {queue}"));
    let p1 = one(&spans, &work_process, 1);
    let r2 = one(&spans, &retry_publish, 2);
    let p2 = one(&spans, &work_process, 2);
    let r3 = one(&spans, &retry_publish, 3);
    let p3 = one(&spans, &work_process, 3);
    let dead_span = capture.span(&format!("process {dlq}"));
    assert_eq!(p1.parent_span_id, producer.span_context.span_id());
    assert_eq!(r2.parent_span_id, p1.span_context.span_id());
    assert_eq!(p2.parent_span_id, r2.span_context.span_id());
    assert_eq!(r3.parent_span_id, p2.span_context.span_id());
    assert_eq!(p3.parent_span_id, r3.span_context.span_id());
    assert_eq!(dead_span.parent_span_id, r3.span_context.span_id());
    assert_eq!(attr(&dead_span, "messaging.message.attempt"), i(3));

    for (span, outcome) in [(&p1, "retry"), (&p2, "retry"), (&p3, "reject")] {
        assert_eq!(attr(span, "messaging.message.outcome"), s(outcome));
        assert_eq!(attr(span, "error.type"), s("std::io::error::Error"));
    }
    assert_eq!(
        attr(&r2, "messaging.rabbitmq.destination.routing_key"),
        s(retry.retry_queue())
    );
    assert_eq!(attr(&r2, "messaging.message.id"), s("job-7"));
    assert_eq!(
        total(
            &capture,
            "messaging.client.sent.messages",
            &[("messaging.destination.name", retry.retry_queue())]
        ),
        2.0
    );
}

#[test]
fn retry_queue_arguments_and_names() {
    let retry = RetryQueue::new("orders", RetryPolicy::new()).unwrap();
    let args = retry.arguments();
    // Each copy expires after its own backoff, not a queue-wide TTL.
    assert_eq!(args.inner().get("x-message-ttl"), None);
    assert_eq!(
        header_text(&args, "x-dead-letter-exchange").as_deref(),
        Some("")
    );
    assert_eq!(
        header_text(&args, "x-dead-letter-routing-key").as_deref(),
        Some("orders")
    );
    assert!(matches!(
        RetryQueue::new(&"q".repeat(250), RetryPolicy::new()),
        Err(RetryError::NameTooLong(256))
    ));
    assert!(matches!(
        retry.with_retry_queue(&"r".repeat(300)),
        Err(RetryError::NameTooLong(300))
    ));
}
