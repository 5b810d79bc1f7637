//! Messages published by clients that know nothing of tracewire, and headers that are wrong.

mod support;

use std::convert::Infallible;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use opentelemetry::trace::{SpanId, TraceContextExt};
use tracewire_test::Capture;

use support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Publishes with plain lapin (no tracewire), headers set by hand.
async fn plain_publish(channel: &lapin::Channel, queue: &str, headers: FieldTable) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"plain",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_client_traceparent_is_continued() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("plain");
    declare_queue(&channel, &queue, FieldTable::default()).await;

    // A long-string traceparent (how most AMQP clients send text) with a trace state, and a
    // byte-array one (how some send raw bytes).
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        long(&format!("00-{TRACE}-{PARENT}-01")),
    );
    headers.insert("tracestate".into(), long("vendor=opaque"));
    plain_publish(&channel, &queue, headers).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::ByteArray(ByteArray::from(
            format!("00-{TRACE}-b7ad6b7169203331-01").into_bytes(),
        )),
    );
    plain_publish(&channel, &queue, headers).await;

    let mut consumer = consume(&channel, &queue).await;
    for _ in 0..2 {
        let delivery = next(&mut consumer).await;
        assert_eq!(
            delivery
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string(),
            TRACE
        );
        consumer
            .process(&delivery, async {
                tracing::info!("plain message handled");
                Ok::<(), Infallible>(())
            })
            .await
            .expect("ack");
    }

    let spans = capture.spans_named(&format!("process {queue}"));
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].span_context.trace_id().to_string(), TRACE);
    assert_eq!(spans[0].parent_span_id.to_string(), PARENT);
    assert!(spans[0].parent_span_is_remote);
    assert_eq!(
        spans[0].span_context.trace_state().header(),
        "vendor=opaque"
    );
    assert_eq!(spans[1].span_context.trace_id().to_string(), TRACE);
    assert_eq!(spans[1].parent_span_id.to_string(), "b7ad6b7169203331");

    let logs = capture.logs();
    let lines: Vec<_> = logs
        .iter()
        .filter(|l| l["message"] == "plain message handled")
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, span) in lines.iter().zip(&spans) {
        assert_eq!(line["trace_id"], TRACE);
        assert_eq!(
            line["span_id"],
            span.span_context.span_id().to_string().as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trace_headers_start_a_fresh_trace_and_are_counted() {
    let capture = Capture::install();
    let conn = connect().await;
    let channel = traced_channel(&conn).await;
    let queue = unique("bad");
    declare_queue(&channel, &queue, FieldTable::default()).await;

    let valid = format!("00-{TRACE}-{PARENT}-01");
    let cases: Vec<(&str, FieldTable)> = vec![
        ("binary traceparent", {
            let mut h = FieldTable::default();
            h.insert(
                "traceparent".into(),
                AMQPValue::ByteArray(ByteArray::from(vec![0xff, 0xfe, 0x00, 0x80])),
            );
            h
        }),
        ("non-UTF-8 long string", {
            let mut h = FieldTable::default();
            h.insert(
                "traceparent".into(),
                AMQPValue::LongString(LongString::from(vec![b'0', b'0', b'-', 0xc3, 0x28])),
            );
            h
        }),
        ("integer traceparent", {
            let mut h = FieldTable::default();
            h.insert("traceparent".into(), AMQPValue::LongLongInt(42));
            h
        }),
        ("nested table traceparent", {
            let mut h = FieldTable::default();
            let mut inner = FieldTable::default();
            inner.insert("x".into(), long("y"));
            h.insert("traceparent".into(), AMQPValue::FieldTable(inner));
            h
        }),
        ("oversized traceparent", {
            let mut h = FieldTable::default();
            h.insert(
                "traceparent".into(),
                long(&format!("{valid}-{}", "a".repeat(400))),
            );
            h
        }),
        ("malformed traceparent", {
            let mut h = FieldTable::default();
            h.insert("traceparent".into(), long("00-not-a-trace-01"));
            h
        }),
    ];
    let n = cases.len();
    for (_, headers) in &cases {
        plain_publish(&channel, &queue, headers.clone()).await;
    }
    // An oversized baggage beside a valid traceparent: the trace is kept, the baggage dropped.
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), long(&valid));
    headers.insert("baggage".into(), long(&format!("k={}", "v".repeat(10_000))));
    // Unrelated headers of every odd kind ride along untouched.
    headers.insert(
        "x-binary".into(),
        AMQPValue::ByteArray(vec![0u8, 255].into()),
    );
    headers.insert("x-huge".into(), long(&"z".repeat(64 * 1024)));
    headers.insert(ShortString255::key(), AMQPValue::Boolean(true));
    plain_publish(&channel, &queue, headers).await;

    let mut consumer = consume(&channel, &queue).await;
    for (name, _) in &cases {
        let delivery = next(&mut consumer).await;
        assert!(
            !delivery.context().span().span_context().is_valid(),
            "{name}: no context expected"
        );
        consumer
            .process(&delivery, async { Ok::<(), Infallible>(()) })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let last = next(&mut consumer).await;
    let headers = last.properties.headers().clone().expect("headers");
    assert_eq!(
        header_text(&headers, "x-huge").map(|s| s.len()),
        Some(64 * 1024)
    );
    assert!(headers.contains_key(ShortString255::key().as_str()));
    assert_eq!(
        opentelemetry::baggage::BaggageExt::baggage(last.context()).len(),
        0
    );
    consumer
        .process(&last, async { Ok::<(), Infallible>(()) })
        .await
        .expect("ack");

    let spans = capture.spans_named(&format!("process {queue}"));
    assert_eq!(spans.len(), n + 1);
    let mut fresh_traces = std::collections::HashSet::new();
    for span in &spans[..n] {
        assert_eq!(span.parent_span_id, SpanId::INVALID, "{span:?}");
        assert!(span.links.links.is_empty());
        assert_eq!(attr(span, "messaging.message.outcome"), s("ack"));
        assert_ne!(span.span_context.trace_id().to_string(), TRACE);
        fresh_traces.insert(span.span_context.trace_id());
    }
    assert_eq!(fresh_traces.len(), n, "each bad message gets its own trace");
    assert_eq!(spans[n].span_context.trace_id().to_string(), TRACE);
    assert_eq!(spans[n].parent_span_id.to_string(), PARENT);

    let rejected = |reason: &str| {
        total(
            &capture,
            "tracewire.propagation.rejected",
            &[("carrier", "amqp"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("not_utf8"), 2.0);
    assert_eq!(rejected("unsupported_type"), 2.0);
    assert_eq!(rejected("too_long"), 2.0);
    assert_eq!(rejected("malformed"), 1.0);
}

/// A header key of exactly 255 bytes, the longest AMQP allows.
struct ShortString255;

impl ShortString255 {
    fn key() -> lapin::types::ShortString {
        lapin::types::ShortString::try_new("k".repeat(255)).expect("255 bytes fit")
    }
}

#[test]
fn injecting_into_a_table_never_panics_on_long_keys() {
    use opentelemetry::propagation::Injector;
    let capture = Capture::install();
    let mut table = FieldTable::default();
    let mut injector = tracewire_amqp::carrier::FieldTableInjector(&mut table);
    injector.set(&"k".repeat(256), "v".into());
    injector.set(&"k".repeat(255), "v".into());
    assert_eq!(
        table.inner().len(),
        1,
        "the 255-byte key fits, the 256-byte one is skipped"
    );
    assert_eq!(
        total(
            &capture,
            "tracewire.propagation.rejected",
            &[("carrier", "amqp"), ("reason", "unrepresentable")]
        ),
        1.0
    );
}
