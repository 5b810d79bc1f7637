//! Scenarios run against every broker (the mock cluster in every run, tansu when started).

use std::fmt;
use std::time::Duration;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, Value, global};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tracewire_core::messaging::ParentMode;
use tracewire_kafka::{
    Outcome, RetryPolicy, RetryTopics, TracedConsumer, TracedMessage, TracedProducer,
};

use super::*;

const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A header as a plain client writes it: any key, any bytes or null.
type RawHeader<'a> = (&'a str, Option<&'a [u8]>);

/// A root span standing for "the request that produced the record".
fn root(name: &'static str) -> Context {
    let span = global::tracer("scenario").start(name);
    Context::current_with_span(span)
}

#[derive(Debug)]
pub struct PaymentDeclined;

impl fmt::Display for PaymentDeclined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("payment declined")
    }
}

impl std::error::Error for PaymentDeclined {}

/// Produce under a known trace with the traced producer, consume with the traced consumer:
/// the process span is the producer span's child in the same trace, the handler's log line
/// and nested span belong to it, the offset is committed, and the metrics count one record.
pub async fn produce_then_process_in_one_trace(broker: &Broker) {
    let telemetry = install();
    let topic = unique("orders");
    let group = unique("billing");
    broker.create_topic(&topic, 1).await;

    let producer = TracedProducer::from_config(&broker.producer_config())
        .unwrap()
        .with_message_key(true);
    let request = root("POST /orders");
    let delivery = within(
        30,
        "delivery",
        producer
            .send(
                tracewire_kafka::Message::to(&topic)
                    .key("order-7")
                    .payload("{\"id\":7}")
                    .header("content-type", "application/json")
                    .header(
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    )
                    .message_id("o-7"),
            )
            .with_context(request.clone()),
    )
    .await
    .expect("delivered");
    assert_eq!(trace_id_of(delivery.context()), trace_id_of(&request));
    request.span().end();

    let consumer = TracedConsumer::from_config(&broker.consumer_config(&group))
        .unwrap()
        .with_commit(Some(CommitMode::Sync));
    assign(consumer.inner(), &[(&topic, 1)]);
    let msg = within(30, "the record", consumer.recv()).await.unwrap();
    assert_eq!(msg.attempt(), 1);
    // The message's own headers arrive; the stale `traceparent` it was given does not.
    let names: Vec<&str> = msg
        .headers()
        .map(|h| h.iter().map(|h| h.key).collect())
        .unwrap_or_default();
    assert_eq!(
        names.iter().filter(|n| **n == "traceparent").count(),
        1,
        "{names:?}"
    );
    assert!(names.contains(&"content-type"), "{names:?}");
    let processed = consumer
        .process(&msg, async {
            tracing::info!(order_id = 7, "charging order");
            global::tracer("handler").start("charge card").end();
            Ok::<(), PaymentDeclined>(())
        })
        .await
        .unwrap();
    assert_eq!(processed.outcome(), Outcome::Ack);
    assert!(processed.is_ok());

    let root_span = telemetry.span("POST /orders");
    let send = telemetry.span(&format!("send {topic}"));
    let process = telemetry.span(&format!("process {topic}"));
    let nested = telemetry.span("charge card");

    // One trace: request → send → process → nested.
    assert_eq!(trace_id(&send), trace_id(&root_span));
    assert_eq!(send.parent_span_id, span_id(&root_span));
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(trace_id(&process), trace_id(&root_span));
    assert_eq!(process.parent_span_id, span_id(&send));
    assert!(process.parent_span_is_remote);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(process.links.len(), 1);
    assert_eq!(process.links[0].span_context.span_id(), span_id(&send));
    assert_eq!(
        process.links[0].span_context.trace_id(),
        trace_id(&root_span)
    );
    assert_eq!(nested.parent_span_id, span_id(&process));
    assert_eq!(trace_id(&nested), trace_id(&root_span));

    assert_attr(&send, "messaging.system", "kafka");
    assert_attr(&send, "messaging.operation.type", "send");
    assert_attr(&send, "messaging.operation.name", "send");
    assert_attr(&send, "messaging.destination.name", topic.clone());
    assert_attr(&send, "messaging.destination.partition.id", "0");
    assert_attr(&send, "messaging.kafka.offset", delivery.offset());
    assert_attr(&send, "messaging.kafka.message.key", "order-7");
    assert_attr(&send, "messaging.message.id", "o-7");
    assert_attr(&send, "messaging.message.body.size", 8i64);
    assert_eq!(send.status, Status::Unset);

    assert_attr(&process, "messaging.system", "kafka");
    assert_attr(&process, "messaging.operation.type", "process");
    assert_attr(&process, "messaging.destination.name", topic.clone());
    assert_attr(&process, "messaging.consumer.group.name", group.clone());
    assert_attr(&process, "messaging.destination.partition.id", "0");
    assert_attr(&process, "messaging.kafka.offset", delivery.offset());
    assert_attr(&process, "messaging.message.body.size", 8i64);
    assert_attr(&process, "messaging.message.attempt", 1i64);
    assert_attr(&process, "messaging.message.outcome", "ack");
    assert_eq!(
        attr(&process.attributes, "messaging.kafka.message.key"),
        None
    );
    assert_eq!(attr(&process.attributes, "error.type"), None);

    // The handler's log line carries the record's trace and the process span.
    let lines = telemetry.logs();
    let line = lines
        .iter()
        .find(|l| l["message"] == "charging order")
        .expect("handler log line");
    assert_eq!(line["trace_id"], trace_id(&root_span).to_string());
    assert_eq!(line["span_id"], span_id(&process).to_string());
    assert_eq!(line["order_id"], 7);

    // The offset after the record is committed for the group.
    let committed = consumer
        .inner()
        .committed(Duration::from_secs(10))
        .expect("committed offsets");
    let elem = committed.find_partition(&topic, 0).expect("partition 0");
    assert_eq!(
        elem.offset(),
        rdkafka::Offset::Offset(delivery.offset() + 1)
    );

    let dest = [("messaging.destination.name", topic.as_str())];
    let sent = [
        ("messaging.system", "kafka"),
        ("messaging.operation.name", "send"),
        dest[0],
    ];
    assert_eq!(
        telemetry.counter("messaging.client.sent.messages", &sent),
        1
    );
    assert_eq!(
        telemetry.histogram_count("messaging.client.operation.duration", &sent),
        (1, "s".to_owned())
    );
    let consumed = [
        ("messaging.system", "kafka"),
        ("messaging.operation.name", "poll"),
        dest[0],
        ("messaging.consumer.group.name", group.as_str()),
    ];
    assert_eq!(
        telemetry.counter("messaging.client.consumed.messages", &consumed),
        1
    );
    let processed = [
        ("messaging.operation.name", "process"),
        dest[0],
        ("messaging.consumer.group.name", group.as_str()),
    ];
    assert_eq!(
        telemetry.histogram_count("messaging.process.duration", &processed),
        (1, "s".to_owned())
    );
}

const HAND_SET_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HAND_SET_SPAN: &str = "00f067aa0ba902b7";

fn plain_producer(broker: &Broker) -> FutureProducer {
    broker.producer_config().create().expect("plain producer")
}

async fn plain_send(producer: &FutureProducer, topic: &str, headers: OwnedHeaders) {
    within(
        30,
        "plain delivery",
        producer.send(
            FutureRecord::<str, str>::to(topic)
                .payload("plain")
                .headers(headers),
            SEND_TIMEOUT,
        ),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("plain delivery");
}

async fn process_ok(consumer: &TracedConsumer, msg: &TracedMessage<'_>) {
    let processed = consumer
        .process(msg, async { Ok::<(), PaymentDeclined>(()) })
        .await
        .unwrap();
    assert_eq!(processed.outcome(), Outcome::Ack);
}

/// A record written by a plain rdkafka producer with a hand-set `traceparent` is processed in
/// that trace (and, with `ParentMode::LinkOnly`, in a new trace linking to it).
pub async fn hand_set_traceparent_is_picked_up(broker: &Broker) {
    let telemetry = install();
    let topic = unique("plain");
    broker.create_topic(&topic, 1).await;
    let traceparent = format!("00-{HAND_SET_TRACE}-{HAND_SET_SPAN}-01");
    plain_send(
        &plain_producer(broker),
        &topic,
        OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some(&traceparent),
            })
            .insert(Header {
                key: "baggage",
                value: Some("tenant=acme"),
            }),
    )
    .await;

    let parented = TracedConsumer::from_config(&broker.consumer_config(&unique("g1"))).unwrap();
    assign(parented.inner(), &[(&topic, 1)]);
    let msg = within(30, "the record", parented.recv()).await.unwrap();
    assert_eq!(
        msg.context().span().span_context().trace_id().to_string(),
        HAND_SET_TRACE
    );
    let mut baggage = None;
    parented
        .process(&msg, async {
            use opentelemetry::baggage::BaggageExt;
            baggage = Context::map_current(|cx| cx.baggage().get("tenant").map(|v| v.to_string()));
            Ok::<(), PaymentDeclined>(())
        })
        .await
        .unwrap();
    assert_eq!(
        baggage.as_deref(),
        Some("acme"),
        "baggage reaches the handler"
    );
    drop(msg);

    let link_only = TracedConsumer::from_config(&broker.consumer_config(&unique("g2")))
        .unwrap()
        .with_parent_mode(ParentMode::LinkOnly);
    assign(link_only.inner(), &[(&topic, 1)]);
    let msg = within(30, "the record again", link_only.recv())
        .await
        .unwrap();
    process_ok(&link_only, &msg).await;

    let spans = telemetry.spans_named(&format!("process {topic}"));
    assert_eq!(spans.len(), 2);
    let (parented, linked) = (&spans[0], &spans[1]);
    assert_eq!(trace_id(parented).to_string(), HAND_SET_TRACE);
    assert_eq!(parented.parent_span_id.to_string(), HAND_SET_SPAN);
    assert!(parented.parent_span_is_remote);
    assert_eq!(parented.links.len(), 1);
    assert_eq!(
        parented.links[0].span_context.span_id().to_string(),
        HAND_SET_SPAN
    );

    assert_ne!(trace_id(linked).to_string(), HAND_SET_TRACE);
    assert_eq!(linked.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_eq!(linked.links.len(), 1);
    assert_eq!(
        linked.links[0].span_context.trace_id().to_string(),
        HAND_SET_TRACE
    );
    assert_eq!(
        linked.links[0].span_context.span_id().to_string(),
        HAND_SET_SPAN
    );
}

/// Malformed, binary, oversized, null and duplicate headers are survived: such records start
/// a new trace (or the last duplicate wins) and every rejection is counted by reason.
pub async fn bad_headers_are_survived_and_counted(broker: &Broker) {
    let telemetry = install();
    let topic = unique("bad");
    broker.create_topic(&topic, 1).await;
    let valid = format!("00-{HAND_SET_TRACE}-{HAND_SET_SPAN}-01");
    let second_trace = "0af7651916cd43dd8448eb211c80319c";
    let second = format!("00-{second_trace}-b7ad6b7169203331-01");
    let oversized = format!("{valid}-{}", "ab".repeat(150));
    let huge_baggage = format!("k={}", "v".repeat(9000));
    let records: Vec<Vec<RawHeader<'_>>> = vec![
        vec![("traceparent", Some(b"00-zzzz-00f067aa0ba902b7-01"))],
        vec![("traceparent", Some(b"00-\xff\xfe\xfd-01"))],
        vec![
            ("traceparent", Some(valid.as_bytes())),
            ("traceparent", Some(second.as_bytes())),
        ],
        vec![("traceparent", Some(oversized.as_bytes()))],
        vec![
            ("traceparent", Some(valid.as_bytes())),
            ("baggage", Some(huge_baggage.as_bytes())),
        ],
        vec![("traceparent", None)],
        vec![
            ("tracewire-attempt", Some(b"\xff")),
            ("traceparent", Some(b"")),
        ],
    ];
    let producer = plain_producer(broker);
    for headers in &records {
        let owned = headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header { key, value: *value })
        });
        plain_send(&producer, &topic, owned).await;
    }

    let before = tracewire_core::propagation::rejected_total();
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g"))).unwrap();
    assign(consumer.inner(), &[(&topic, 1)]);
    for _ in 0..records.len() {
        let msg = within(30, "a record", consumer.recv()).await.unwrap();
        assert_eq!(msg.attempt(), 1);
        process_ok(&consumer, &msg).await;
    }

    let spans = telemetry.spans_named(&format!("process {topic}"));
    assert_eq!(spans.len(), records.len());
    let fresh = |i: usize| {
        let s = &spans[i];
        assert_eq!(
            s.parent_span_id,
            opentelemetry::trace::SpanId::INVALID,
            "record {i} should start a new trace"
        );
        assert!(s.links.is_empty(), "record {i} has nothing to link to");
        assert_ne!(trace_id(s).to_string(), HAND_SET_TRACE);
    };
    fresh(0);
    fresh(1);
    assert_eq!(
        trace_id(&spans[2]).to_string(),
        second_trace,
        "last duplicate wins"
    );
    assert_eq!(spans[2].parent_span_id.to_string(), "b7ad6b7169203331");
    fresh(3);
    assert_eq!(
        trace_id(&spans[4]).to_string(),
        HAND_SET_TRACE,
        "baggage dropped, trace kept"
    );
    fresh(5);
    fresh(6);

    // malformed (0 and the empty one in 6), not_utf8 (1), too_long (3 and 4's baggage).
    assert_eq!(tracewire_core::propagation::rejected_total() - before, 5);
    let kafka = |reason| {
        telemetry.counter(
            "tracewire.propagation.rejected",
            &[("carrier", "kafka"), ("reason", reason)],
        )
    };
    assert_eq!(kafka("malformed"), 2);
    assert_eq!(kafka("not_utf8"), 1);
    assert_eq!(kafka("too_long"), 2);
}

/// Processing N records together yields one span with N links, each carrying the record's
/// partition and offset; the commit covers the highest offset.
pub async fn batch_links_every_record(broker: &Broker) {
    let telemetry = install();
    let topic = unique("batch");
    let group = unique("g");
    broker.create_topic(&topic, 1).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    let mut roots = Vec::new();
    for i in 0..3 {
        let request = root(["request 0", "request 1", "request 2"][i]);
        let payload = format!("record {i}");
        within(
            30,
            "delivery",
            producer
                .send_record(
                    FutureRecord::<str, str>::to(&topic).payload(&payload),
                    SEND_TIMEOUT,
                )
                .with_context(request.clone()),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
        request.span().end();
        roots.push(request);
    }

    let consumer = TracedConsumer::from_config(&broker.consumer_config(&group))
        .unwrap()
        .with_commit(Some(CommitMode::Sync));
    assign(consumer.inner(), &[(&topic, 1)]);
    let batch = recv_n(&consumer, 3).await;
    let poll_loop = root("poll loop");
    let processed = consumer
        .process_batch(&batch, async {
            tracing::info!(records = 3, "batch handled");
            Ok::<(), PaymentDeclined>(())
        })
        .with_context(poll_loop.clone())
        .await
        .unwrap();
    assert_eq!(processed.outcome(), Outcome::Ack);
    poll_loop.span().end();

    let sends = telemetry.spans_named(&format!("send {topic}"));
    assert_eq!(sends.len(), 3);
    let span = telemetry.span(&format!("process {topic}"));
    let poll = telemetry.span("poll loop");
    assert_eq!(span.span_kind, SpanKind::Consumer);
    assert_eq!(span.parent_span_id, span_id(&poll));
    assert_eq!(trace_id(&span), trace_id(&poll));
    assert_attr(&span, "messaging.batch.message_count", 3i64);
    assert_attr(&span, "messaging.destination.name", topic.clone());
    assert_attr(&span, "messaging.consumer.group.name", group.clone());
    assert_attr(&span, "messaging.message.outcome", "ack");
    assert_eq!(span.links.len(), 3);
    for (i, link) in span.links.iter().enumerate() {
        let send = &sends[i];
        assert_eq!(link.span_context.trace_id(), trace_id(send));
        assert_eq!(link.span_context.span_id(), span_id(send));
        assert_eq!(
            link.span_context.trace_id(),
            roots[i].span().span_context().trace_id()
        );
        assert_eq!(
            attr(&link.attributes, "messaging.destination.partition.id"),
            Some(Value::from("0"))
        );
        assert_eq!(
            attr(&link.attributes, "messaging.kafka.offset"),
            Some(Value::from(batch[i].offset()))
        );
    }
    let line = telemetry
        .logs()
        .into_iter()
        .find(|l| l["message"] == "batch handled")
        .unwrap();
    assert_eq!(line["span_id"], span_id(&span).to_string());

    let committed = consumer.inner().committed(Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        rdkafka::Offset::Offset(batch[2].offset() + 1)
    );
}

/// A failing record goes through the retry topic and stays in one trace: send → attempt 1
/// (failed) → retry send → attempt 2 (failed) → retry send → attempt 3 (succeeds).
pub async fn retry_topic_keeps_one_trace(broker: &Broker) {
    let telemetry = install();
    let RetrySetup {
        topic,
        retry_topic,
        dlt: _,
        producer,
        retry,
    } = retry_setup(broker, "payments", 3, (50, 100)).await;
    let request = root("checkout");
    within(
        30,
        "delivery",
        producer
            .send_record(
                FutureRecord::<str, str>::to(&topic)
                    .key("p-1")
                    .payload("pay")
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "tenant",
                        value: Some("acme"),
                    })),
                SEND_TIMEOUT,
            )
            .with_context(request.clone()),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    request.span().end();

    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g")))
        .unwrap()
        .with_commit(Some(CommitMode::Sync))
        .with_retry(retry);
    assign(consumer.inner(), &[(&topic, 1), (&retry_topic, 1)]);
    let mut attempts_seen = Vec::new();
    loop {
        let msg = within(30, "the next attempt", consumer.recv())
            .await
            .unwrap();
        let attempt = msg.attempt();
        attempts_seen.push(attempt);
        let tenant = msg
            .headers()
            .and_then(|h| {
                use rdkafka::message::Headers;
                h.iter().find(|h| h.key == "tenant").and_then(|h| h.value)
            })
            .map(<[u8]>::to_vec);
        assert_eq!(
            tenant.as_deref(),
            Some(&b"acme"[..]),
            "other headers travel along"
        );
        let processed = consumer
            .process(&msg, async move {
                if attempt < 3 {
                    Err(PaymentDeclined)
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(processed.outcome(), Outcome::Retry);
            assert!(processed.error().is_some());
        } else {
            assert_eq!(processed.outcome(), Outcome::Ack);
            break;
        }
    }
    assert_eq!(attempts_seen, vec![1, 2, 3]);

    let root_span = telemetry.span("checkout");
    let first_send = telemetry.span(&format!("send {topic}"));
    let retry_sends = telemetry.spans_named(&format!("send {retry_topic}"));
    let mut attempts = telemetry.spans_named(&format!("process {topic}"));
    attempts.extend(telemetry.spans_named(&format!("process {retry_topic}")));
    assert_eq!(retry_sends.len(), 2);
    assert_eq!(attempts.len(), 3);

    let chain = [
        &root_span,
        &first_send,
        &attempts[0],
        &retry_sends[0],
        &attempts[1],
        &retry_sends[1],
        &attempts[2],
    ];
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent_span_id,
            span_id(pair[0]),
            "{} should be the child of {}",
            pair[1].name,
            pair[0].name
        );
        assert_eq!(
            trace_id(pair[1]),
            trace_id(&root_span),
            "{} in the trace",
            pair[1].name
        );
    }
    for (i, span) in attempts.iter().enumerate() {
        assert_attr(span, "messaging.message.attempt", (i + 1) as i64);
    }
    for span in &attempts[..2] {
        assert_attr(span, "error.type", "PaymentDeclined");
        assert_attr(span, "messaging.message.outcome", "retry");
        assert_eq!(span.status, Status::error("payment declined"));
    }
    assert_attr(&attempts[2], "messaging.message.outcome", "ack");
    assert_eq!(attr(&attempts[2].attributes, "error.type"), None);
    for (i, span) in retry_sends.iter().enumerate() {
        assert_eq!(span.span_kind, SpanKind::Producer);
        assert_attr(span, "messaging.destination.name", retry_topic.clone());
        assert_attr(span, "messaging.message.attempt", (i + 2) as i64);
    }
    assert_eq!(
        telemetry.counter(
            "messaging.client.sent.messages",
            &[("messaging.destination.name", retry_topic.as_str())]
        ),
        2
    );
    assert_eq!(
        telemetry
            .histogram_count(
                "messaging.process.duration",
                &[("error.type", "PaymentDeclined")]
            )
            .0,
        2
    );
}

/// Once the attempts are used up, the record goes to the dead-letter topic, still in the
/// trace, with the number of attempts made.
pub async fn dead_letter_after_max_attempts(broker: &Broker) {
    let telemetry = install();
    let RetrySetup {
        topic,
        retry_topic,
        dlt,
        producer,
        retry,
    } = retry_setup(broker, "emails", 2, (50, 100)).await;
    let request = root("signup");
    within(
        30,
        "delivery",
        producer
            .send_record(
                FutureRecord::<str, str>::to(&topic).payload("welcome"),
                SEND_TIMEOUT,
            )
            .with_context(request.clone()),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    request.span().end();

    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g")))
        .unwrap()
        .with_retry(retry);
    assign(consumer.inner(), &[(&topic, 1), (&retry_topic, 1)]);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let msg = within(30, "an attempt", consumer.recv()).await.unwrap();
        let processed = consumer
            .process(&msg, async { Err::<(), _>(PaymentDeclined) })
            .await
            .unwrap();
        outcomes.push((msg.topic().to_owned(), msg.attempt(), processed.outcome()));
    }
    assert_eq!(
        outcomes,
        vec![
            (topic.clone(), 1, Outcome::Retry),
            (retry_topic.clone(), 2, Outcome::DeadLetter)
        ]
    );

    let dlt_consumer =
        TracedConsumer::from_config(&broker.consumer_config(&unique("dlt"))).unwrap();
    assign(dlt_consumer.inner(), &[(&dlt, 1)]);
    let dead = within(30, "the dead letter", dlt_consumer.recv())
        .await
        .unwrap();
    assert_eq!(dead.attempt(), 2);
    assert_eq!(dead.payload(), Some(&b"welcome"[..]));

    let root_span = telemetry.span("signup");
    let dlt_send = telemetry.span(&format!("send {dlt}"));
    let second_attempt = telemetry.span(&format!("process {retry_topic}"));
    assert_eq!(trace_id(&dlt_send), trace_id(&root_span));
    assert_eq!(dlt_send.parent_span_id, span_id(&second_attempt));
    assert_attr(&second_attempt, "messaging.message.outcome", "dead_letter");
    assert_attr(&dlt_send, "messaging.message.attempt", 2i64);
    assert_eq!(
        dead.context().span().span_context().span_id(),
        span_id(&dlt_send)
    );
}

/// A batch spanning two partitions links each record with its own partition and offset, and
/// commits the offset after the highest record of each partition.
pub async fn batch_over_partitions_commits_each(broker: &Broker) {
    let telemetry = install();
    let topic = unique("batch-partitions");
    let group = unique("g");
    broker.create_topic(&topic, 2).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    for (partition, payload) in [(0, "a0"), (1, "b0"), (0, "a1"), (1, "b1"), (1, "b2")] {
        within(
            30,
            "delivery",
            producer.send_record(
                FutureRecord::<str, str>::to(&topic)
                    .partition(partition)
                    .payload(payload),
                SEND_TIMEOUT,
            ),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&group))
        .unwrap()
        .with_commit(Some(CommitMode::Sync));
    assign(consumer.inner(), &[(&topic, 2)]);
    let batch = recv_n(&consumer, 5).await;
    let processed = consumer
        .process_batch(&batch, async { Ok::<(), PaymentDeclined>(()) })
        .await
        .unwrap();
    assert_eq!(processed.outcome(), Outcome::Ack);

    let span = telemetry.span(&format!("process {topic}"));
    assert_attr(&span, "messaging.batch.message_count", 5i64);
    let mut links: Vec<(Value, Value)> = span
        .links
        .iter()
        .map(|l| {
            (
                attr(&l.attributes, "messaging.destination.partition.id").unwrap(),
                attr(&l.attributes, "messaging.kafka.offset").unwrap(),
            )
        })
        .collect();
    links.sort_by_key(|(p, o)| (p.to_string(), o.to_string()));
    assert_eq!(
        links,
        [
            (Value::from("0"), Value::I64(0)),
            (Value::from("0"), Value::I64(1)),
            (Value::from("1"), Value::I64(0)),
            (Value::from("1"), Value::I64(1)),
            (Value::from("1"), Value::I64(2)),
        ]
    );
    let committed = consumer.inner().committed(Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        rdkafka::Offset::Offset(2)
    );
    assert_eq!(
        committed.find_partition(&topic, 1).unwrap().offset(),
        rdkafka::Offset::Offset(3)
    );
}

/// `Outcome::Manual`: the handler commits (or not) itself; the consumer sends nothing.
pub async fn manual_outcome_leaves_committing_to_the_handler(broker: &Broker) {
    let telemetry = install();
    let topic = unique("manual");
    broker.create_topic(&topic, 1).await;
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    for payload in ["first", "second"] {
        within(
            30,
            "delivery",
            producer.send_record(
                FutureRecord::<str, str>::to(&topic).payload(payload),
                SEND_TIMEOUT,
            ),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g")))
        .unwrap()
        .with_commit(Some(CommitMode::Sync));
    assign(consumer.inner(), &[(&topic, 1)]);
    // The first record the handler commits itself; the second it leaves uncommitted.
    for commit in [true, false] {
        let msg = within(30, "a record", consumer.recv()).await.unwrap();
        let processed = consumer
            .process(&msg, async {
                if commit {
                    consumer
                        .inner()
                        .commit_message(msg.inner(), CommitMode::Sync)?;
                }
                Ok::<_, rdkafka::error::KafkaError>(Outcome::Manual)
            })
            .await
            .unwrap();
        assert_eq!(processed.outcome(), Outcome::Manual);
    }
    let spans = telemetry.spans_named(&format!("process {topic}"));
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_attr(span, "messaging.message.outcome", "manual");
        assert_eq!(attr(&span.attributes, "error.type"), None);
    }
    let committed = consumer.inner().committed(Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        rdkafka::Offset::Offset(1),
        "only the handler's own commit"
    );
}

/// A send to a topic that does not exist (and is not created on first use, as on tansu and
/// many clusters) fails within a few seconds, every time under one `error.type`, on the span
/// and on the metrics.
pub async fn send_to_a_missing_topic_fails_promptly_as_one_error_type(broker: &Broker) {
    let telemetry = install();
    let topic = unique("never-created");
    let mut config = broker.producer_config();
    // The mock cluster creates topics on first use unless the client asks it not to (tansu
    // never does).
    config.set("allow.auto.create.topics", "false");
    let producer = TracedProducer::from_config(&config).unwrap();
    for _ in 0..2 {
        let err = within(
            10,
            "the failed send",
            producer.send_record(
                FutureRecord::<str, str>::to(&topic).payload("x"),
                Duration::from_secs(1),
            ),
        )
        .await
        .map(|d| d.offset)
        .expect_err("no such topic")
        .0;
        assert!(
            matches!(
                err.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
            ),
            "{err:?}"
        );
    }
    let sends = telemetry.spans_named(&format!("send {topic}"));
    assert_eq!(sends.len(), 2);
    for send in &sends {
        assert_attr(send, "error.type", "UnknownTopicOrPartition");
    }
    assert_eq!(
        telemetry.counter(
            "messaging.client.sent.messages",
            &[
                ("messaging.destination.name", topic.as_str()),
                ("error.type", "UnknownTopicOrPartition")
            ]
        ),
        2
    );
}

/// A failed batch whose records are at different attempts: the fresh one goes to the retry
/// topic, the one out of attempts to the dead-letter topic, and the batch reports the worse of
/// the two (`dead_letter`), on its span and in `Processed`.
pub async fn failed_batch_reports_its_worst_outcome(broker: &Broker) {
    let telemetry = install();
    let RetrySetup {
        topic,
        retry_topic,
        dlt,
        producer,
        retry,
    } = retry_setup(broker, "mixed", 2, (10, 10)).await;
    for message in [
        tracewire_kafka::Message::to(&topic).payload("fresh"),
        tracewire_kafka::Message::to(&topic)
            .payload("last try")
            .header(tracewire_kafka::ATTEMPT_HEADER, "2"),
    ] {
        within(30, "delivery", producer.send(message))
            .await
            .unwrap();
    }
    let consumer = TracedConsumer::from_config(&broker.consumer_config(&unique("g")))
        .unwrap()
        .with_retry(retry);
    assign(consumer.inner(), &[(&topic, 1)]);
    let batch = recv_n(&consumer, 2).await;
    assert_eq!(
        batch.iter().map(|m| m.attempt()).collect::<Vec<_>>(),
        [1, 2]
    );
    let processed = consumer
        .process_batch(&batch, async { Err::<(), _>(PaymentDeclined) })
        .await
        .unwrap();
    assert_eq!(processed.outcome(), Outcome::DeadLetter);
    let span = telemetry.span(&format!("process {topic}"));
    assert_attr(&span, "messaging.message.outcome", "dead_letter");
    assert_attr(&span, "error.type", "PaymentDeclined");

    for (destination, payload, attempt) in [(&retry_topic, "fresh", 2), (&dlt, "last try", 2)] {
        let reader = TracedConsumer::from_config(&broker.consumer_config(&unique("r"))).unwrap();
        assign(reader.inner(), &[(destination, 1)]);
        let copy = within(30, "the copy", reader.recv()).await.unwrap();
        assert_eq!(copy.payload(), Some(payload.as_bytes()), "{destination}");
        assert_eq!(copy.attempt(), attempt, "{destination}");
    }
}

/// A work topic with its retry and dead-letter topics, a producer, and the retry topics a
/// consumer is given: `max_attempts` attempts, backoff from `backoff_ms.0` to `backoff_ms.1`.
struct RetrySetup {
    topic: String,
    retry_topic: String,
    dlt: String,
    producer: TracedProducer,
    retry: RetryTopics,
}

async fn retry_setup(
    broker: &Broker,
    prefix: &str,
    max_attempts: u32,
    backoff_ms: (u64, u64),
) -> RetrySetup {
    let topic = unique(prefix);
    let retry_topic = format!("{topic}.retry");
    let dlt = format!("{topic}.dlt");
    for t in [&topic, &retry_topic, &dlt] {
        broker.create_topic(t, 1).await;
    }
    let producer = TracedProducer::from_config(&broker.producer_config()).unwrap();
    let retry = RetryTopics::new(
        producer.clone(),
        &retry_topic,
        RetryPolicy::new()
            .max_attempts(max_attempts)
            .backoff(
                Duration::from_millis(backoff_ms.0),
                Duration::from_millis(backoff_ms.1),
            )
            .dead_letter(&dlt),
    );
    RetrySetup {
        topic,
        retry_topic,
        dlt,
        producer,
        retry,
    }
}
