//! Publish under a known trace, consume in a CONSUMER span that continues it.

mod support;

use std::convert::Infallible;

use futures_util::FutureExt as _;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Confirmation, ExchangeKind};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use tracewire_amqp::{Message, Outcome, ParentMode, SendError, TracedProducer};
use tracewire_test::Capture;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_continues_the_producer_trace() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("basic");
    declare_queue(&channel, &queue, FieldTable::default()).await;

    // Publish inside a root span, with the user's own headers, one of them a stale traceparent
    // copied from some earlier message.
    let root = root_span("checkout");
    let mut user_headers = FieldTable::default();
    user_headers.insert("tenant".into(), long("acme"));
    user_headers.insert(
        "traceparent".into(),
        long("00-11111111111111111111111111111111-2222222222222222-01"),
    );
    user_headers.insert("tracestate".into(), long("stale=1"));
    user_headers.insert("baggage".into(), long("stale=1"));
    let payload = br#"{"order":42}"#;
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default()
                .with_message_id("m-1".into())
                .with_headers(user_headers),
        )
        .with_context(root.clone())
        .await
        .expect("publish");
    let producer_cx = confirm.context().clone();
    assert!(matches!(confirm.await, Ok(Confirmation::Ack(None))));
    root.span().end();

    let mut consumer = consume(&channel, &queue).await;
    let delivery = next(&mut consumer).await;

    // The headers as the broker delivered them: the user's header kept, the stale trace
    // headers replaced by the producer span's context.
    let headers = delivery.properties.headers().clone().expect("headers");
    assert_eq!(header_text(&headers, "tenant").as_deref(), Some("acme"));
    assert_eq!(
        header_text(&headers, "traceparent"),
        Some(format!(
            "00-{}-{}-01",
            hex_trace(&root),
            hex_span(&producer_cx)
        ))
    );
    // The producer's trace state is empty: the stale one is gone, and no empty header is sent.
    assert!(!headers.contains_key("tracestate"), "stale tracestate kept");
    // No baggage in the publishing context: the stale baggage is gone, not forwarded.
    assert!(!headers.contains_key("baggage"), "stale baggage kept");

    // The delivery exposes the creation context (the producer span, remote).
    let creation = delivery.context().span().span_context().clone();
    assert!(creation.is_remote());
    assert_eq!(creation.trace_id().to_string(), hex_trace(&root));
    assert_eq!(creation.span_id().to_string(), hex_span(&producer_cx));
    assert_eq!(delivery.attempt(), 1);
    assert!(!delivery.redelivered());

    let processed = consumer
        .process(&delivery, async {
            assert_eq!(delivery.data, payload);
            tracing::info!(order = 42, "order handled");
            let tracer = tracewire_core::tracer();
            tracer.in_span("save order", |_| {});
            Ok::<(), Infallible>(())
        })
        .await
        .expect("ack");
    assert_eq!(processed.outcome(), Outcome::Ack);

    let trace_id = hex_trace(&root);
    let root_data = capture.span("checkout");
    let producer = capture.span(&format!("publish {queue}"));
    let process = capture.span(&format!("process {queue}"));
    let inner = capture.span("save order");

    assert_eq!(producer.span_kind, SpanKind::Producer);
    assert_eq!(producer.span_context.trace_id().to_string(), trace_id);
    assert_eq!(producer.parent_span_id, root_data.span_context.span_id());
    assert_eq!(producer.status, Status::Unset);
    let body_size = i64::try_from(payload.len()).unwrap();
    assert_eq!(
        attr_set(&producer.attributes),
        attr_set(&[
            opentelemetry::KeyValue::new("messaging.system", "rabbitmq"),
            opentelemetry::KeyValue::new("messaging.operation.type", "send"),
            opentelemetry::KeyValue::new("messaging.operation.name", "publish"),
            opentelemetry::KeyValue::new("messaging.destination.name", queue.clone()),
            opentelemetry::KeyValue::new(
                "messaging.rabbitmq.destination.routing_key",
                queue.clone()
            ),
            opentelemetry::KeyValue::new("messaging.message.id", "m-1"),
            opentelemetry::KeyValue::new("messaging.message.body.size", body_size),
            opentelemetry::KeyValue::new("server.address", "127.0.0.1"),
            opentelemetry::KeyValue::new("server.port", 5672i64),
        ])
    );

    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(process.span_context.trace_id().to_string(), trace_id);
    assert_eq!(process.parent_span_id, producer.span_context.span_id());
    assert!(process.parent_span_is_remote);
    assert_eq!(process.status, Status::Unset);
    assert_eq!(process.links.links.len(), 1);
    assert_eq!(
        process.links.links[0].span_context.span_id(),
        producer.span_context.span_id()
    );
    assert_eq!(
        attr_set(&process.attributes),
        attr_set(&[
            opentelemetry::KeyValue::new("messaging.system", "rabbitmq"),
            opentelemetry::KeyValue::new("messaging.operation.type", "process"),
            opentelemetry::KeyValue::new("messaging.operation.name", "process"),
            opentelemetry::KeyValue::new("messaging.destination.name", queue.clone()),
            opentelemetry::KeyValue::new("messaging.consumer.group.name", queue.clone()),
            opentelemetry::KeyValue::new(
                "messaging.rabbitmq.destination.routing_key",
                queue.clone()
            ),
            opentelemetry::KeyValue::new("messaging.rabbitmq.message.delivery_tag", 1i64),
            opentelemetry::KeyValue::new("messaging.message.id", "m-1"),
            opentelemetry::KeyValue::new("messaging.message.body.size", body_size),
            opentelemetry::KeyValue::new("messaging.rabbitmq.message.redelivered", false),
            opentelemetry::KeyValue::new("messaging.message.attempt", 1i64),
            opentelemetry::KeyValue::new("messaging.message.outcome", "ack"),
            opentelemetry::KeyValue::new("server.address", "127.0.0.1"),
            opentelemetry::KeyValue::new("server.port", 5672i64),
        ])
    );

    // Nested work and log lines of the handler belong to the process span.
    assert_eq!(inner.span_context.trace_id().to_string(), trace_id);
    assert_eq!(inner.parent_span_id, process.span_context.span_id());
    let logs = capture.logs();
    let line = logs
        .iter()
        .find(|l| l["message"] == "order handled")
        .expect("handler log line");
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(
        line["span_id"],
        process.span_context.span_id().to_string().as_str()
    );
    assert_eq!(line["order"], 42);

    // Metrics.
    let dest = [
        ("messaging.system", "rabbitmq"),
        ("messaging.destination.name", queue.as_str()),
    ];
    assert_eq!(
        total(&capture, "messaging.client.sent.messages", &dest),
        1.0
    );
    let sent = points(&capture, "messaging.client.sent.messages", &dest);
    assert_eq!(sent[0].attr("messaging.operation.name"), Some("publish"));
    assert_eq!(sent[0].attr("error.type"), None);
    assert_eq!(
        total(&capture, "messaging.client.operation.duration", &dest),
        1.0
    );
    let op = points(&capture, "messaging.client.operation.duration", &dest);
    assert_eq!(op[0].unit, "s");
    assert_eq!(op[0].attr("messaging.operation.type"), Some("send"));
    let consumed = points(&capture, "messaging.client.consumed.messages", &dest);
    assert_eq!(consumed.len(), 1);
    assert_eq!(consumed[0].count_or_value(), 1.0);
    assert_eq!(
        consumed[0].attr("messaging.consumer.group.name"),
        Some(queue.as_str())
    );
    let processed = points(&capture, "messaging.process.duration", &dest);
    assert_eq!(processed.len(), 1);
    assert_eq!(processed[0].count_or_value(), 1.0);
    assert_eq!(processed[0].unit, "s");
    assert_eq!(processed[0].attr("error.type"), None);
    assert_eq!(
        processed[0].attr("messaging.consumer.group.name"),
        Some(queue.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_only_mode_starts_a_new_trace_linked_to_the_producer() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn)
        .await
        .with_parent_mode(ParentMode::LinkOnly);
    let queue = unique("linkonly");
    declare_queue(&channel, &queue, FieldTable::default()).await;

    let root = root_span("untrusted producer");
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .with_context(root.clone())
        .await
        .expect("publish");
    confirm.await.expect("confirm");

    let mut consumer = consume(&channel, &queue).await;
    let delivery = next(&mut consumer).await;
    consumer
        .process(&delivery, async { Ok::<(), Infallible>(()) })
        .await
        .expect("ack");

    let producer = capture.span(&format!("publish {queue}"));
    let process = capture.span(&format!("process {queue}"));
    assert_ne!(
        process.span_context.trace_id(),
        producer.span_context.trace_id(),
        "link-only processing must start its own trace"
    );
    assert_eq!(
        process.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    assert_eq!(process.links.links.len(), 1);
    assert_eq!(
        process.links.links[0].span_context.trace_id(),
        producer.span_context.trace_id()
    );
    assert_eq!(
        process.links.links[0].span_context.span_id(),
        producer.span_context.span_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handler_is_recorded_and_the_message_rejected() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("failed");
    declare_kept_queue(&channel, &queue).await;

    publish_confirmed(&channel, &queue, b"x").await;
    let mut consumer = consume(&channel, &queue).await;
    let delivery = next(&mut consumer).await;
    let processed = consumer
        .process(&delivery, async {
            Err::<(), _>(std::io::Error::other("inventory service down"))
        })
        .await
        .expect("reject");
    assert_eq!(
        processed.outcome(),
        Outcome::Reject,
        "without a retry queue a failed delivery is rejected"
    );
    assert_eq!(
        processed.error().map(ToString::to_string).as_deref(),
        Some("inventory service down")
    );

    let process = capture.span(&format!("process {queue}"));
    assert_eq!(
        process.status,
        Status::error("inventory service down".to_string())
    );
    assert_eq!(attr(&process, "error.type"), s("std::io::error::Error"));
    assert_eq!(attr(&process, "messaging.message.outcome"), s("reject"));
    let event = &process.events.events[0];
    assert_eq!(event.name, "exception");
    assert_eq!(
        attr_set(&event.attributes),
        attr_set(&[
            opentelemetry::KeyValue::new("exception.type", "std::io::error::Error"),
            opentelemetry::KeyValue::new("exception.message", "inventory service down"),
        ])
    );
    let processed = points(
        &capture,
        "messaging.process.duration",
        &[("messaging.destination.name", queue.as_str())],
    );
    assert_eq!(processed.len(), 1);
    assert_eq!(
        processed[0].attr("error.type"),
        Some("std::io::error::Error")
    );

    // The rejected message is gone (no dead-letter exchange on this queue): nothing returns to
    // the queue when the consumer goes away.
    assert_eq!(cancel_and_count(&channel, consumer, &queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_mandatory_publish_is_an_error() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let exchange = unique("nowhere");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");

    let producer = TracedProducer::new(channel.clone()).with_options(BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    });
    let err = producer
        .send(Message::to(&exchange).key("no.binding").payload(b"lost"))
        .await
        .expect_err("returned as unroutable");
    assert!(matches!(err, SendError::Returned), "{err:?}");
    assert_eq!(err.error_type(), "returned");
    // The same through lapin's own call: the confirmation carries the returned message.
    let confirmation = channel
        .basic_publish(
            exchange.as_str().into(),
            "no.binding".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(matches!(confirmation, Confirmation::Ack(Some(_))));

    let spans = capture.spans_named(&format!("publish {exchange}"));
    assert_eq!(spans.len(), 2);
    for producer in &spans {
        assert_eq!(attr(producer, "messaging.destination.name"), s(&exchange));
        assert_eq!(
            attr(producer, "messaging.rabbitmq.destination.routing_key"),
            s("no.binding")
        );
        assert_eq!(attr(producer, "error.type"), s("returned"));
        assert!(matches!(producer.status, Status::Error { .. }));
    }
    let sent = points(
        &capture,
        "messaging.client.sent.messages",
        &[("messaging.destination.name", exchange.as_str())],
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attr("error.type"), Some("returned"));
    assert_eq!(sent[0].value, tracewire_test::PointValue::Sum(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_missing_exchange_is_an_error() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let exchange = unique("missing");

    let err = TracedProducer::new(channel.clone())
        .send(Message::to(&exchange).key("rk").payload(b"x"))
        .await
        .expect_err("the broker closes the channel: NOT_FOUND");
    assert!(matches!(err, SendError::Publish(_)), "{err:?}");
    assert_eq!(err.error_type(), "protocol_error");

    let producer = capture.span(&format!("publish {exchange}"));
    assert!(
        matches!(producer.status, Status::Error { .. }),
        "status {:?}",
        producer.status
    );
    let error_type = attr(&producer, "error.type");
    assert_eq!(error_type, s("protocol_error"), "error was {err:?}");
    let sent = points(
        &capture,
        "messaging.client.sent.messages",
        &[("messaging.destination.name", exchange.as_str())],
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attr("error.type"), Some("protocol_error"));
    let _ = AMQPValue::Void;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_ends_the_span_as_an_error() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("panic");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    publish_confirmed(&channel, &queue, b"x").await;
    let mut consumer = consume(&channel, &queue).await;
    let delivery = next(&mut consumer).await;
    let caught = std::panic::AssertUnwindSafe(consumer.process(&delivery, async {
        if std::hint::black_box(true) {
            panic!("handler bug");
        }
        Ok::<(), Infallible>(())
    }))
    .catch_unwind()
    .await;
    assert!(caught.is_err(), "the panic reaches the caller");

    let process = capture.span(&format!("process {queue}"));
    assert_eq!(attr(&process, "error.type"), s("panic"));
    assert_eq!(process.status, Status::error("panicked"));
    assert!(!has_attr(&process, "messaging.message.outcome"));
    // Not settled: the broker redelivers it once the channel is gone; still unacked here.
    let again = tokio::time::timeout(std::time::Duration::from_millis(300), consumer.recv()).await;
    assert!(
        again.is_err(),
        "nothing else is delivered while it is unacked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_outcome_leaves_settling_to_the_handler() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("manual");
    declare_kept_queue(&channel, &queue).await;
    publish_confirmed(&channel, &queue, b"x").await;
    publish_confirmed(&channel, &queue, b"y").await;
    let mut consumer = consume(&channel, &queue).await;
    // The first delivery the handler acks itself; the second it leaves unsettled.
    for settle in [true, false] {
        let delivery = next(&mut consumer).await;
        let processed = consumer
            .process(&delivery, async {
                if settle {
                    delivery
                        .acker
                        .ack(lapin::options::BasicAckOptions::default())
                        .await?;
                }
                Ok::<_, lapin::Error>(Outcome::Manual)
            })
            .await
            .expect("nothing to settle");
        assert_eq!(processed.outcome(), Outcome::Manual);
    }
    let spans = capture.spans_named(&format!("process {queue}"));
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_eq!(attr(span, "messaging.message.outcome"), s("manual"));
        assert!(!has_attr(span, "error.type"));
    }
    // Nothing was sent for the second: it returns to the queue when its channel closes.
    drop(consumer);
    channel
        .close(200, "done".into())
        .await
        .expect("close the channel");
    let other = traced_channel(&conn).await;
    let left = other
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    assert_eq!(left.message_count(), 1);
    other
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .expect("queue_delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_send_carries_the_trace_headers_and_id_and_waits_for_the_confirm() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("producer");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let mut consumer = consume(&channel, &queue).await;
    let producer = TracedProducer::new(channel.clone())
        .with_properties(BasicProperties::default().with_content_type("application/json".into()));

    let request = root_span("POST /orders");
    let stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let sent = producer
        .send(
            Message::to(&queue)
                .payload(br#"{"id":7}"#)
                .header("x-tenant", "acme")
                .header("traceparent", stale)
                .message_id("o-7"),
        )
        .with_context(request.clone())
        .await
        .expect("sent");
    assert!(sent.confirmed());
    assert_eq!(hex_trace(sent.context()), hex_trace(&request));

    let delivery = next(&mut consumer).await;
    let headers = delivery.properties.headers().clone().expect("headers");
    assert_eq!(header_text(&headers, "x-tenant").as_deref(), Some("acme"));
    let traceparent = header_text(&headers, "traceparent").expect("traceparent");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", hex_trace(&request), hex_span(sent.context()))
    );
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some("o-7")
    );
    assert_eq!(
        delivery
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.as_str()),
        Some("application/json")
    );
    assert_eq!(hex_trace(delivery.context()), hex_trace(&request));
    request.span().end();

    let span = capture.span(&format!("publish {queue}"));
    assert_eq!(span.span_kind, SpanKind::Producer);
    assert_eq!(
        span.span_context.span_id(),
        sent.context().span().span_context().span_id()
    );
    assert_eq!(attr(&span, "messaging.destination.name"), s(&queue));
    assert_eq!(attr(&span, "messaging.message.id"), s("o-7"));
    assert_eq!(attr(&span, "messaging.message.body.size"), 8i64.into());
    assert_eq!(span.status, Status::Unset);

    // A routing key must be UTF-8: refused before anything is sent.
    let err = producer
        .send(Message::to("amq.direct").key(b"\xff\xfe").payload(b"x"))
        .await
        .expect_err("not UTF-8");
    assert!(matches!(err, SendError::RoutingKey), "{err:?}");
    assert!(capture.spans_named("publish amq.direct").is_empty());
    drop(consumer);
}
