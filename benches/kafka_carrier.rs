//! Cost of carrying trace context through Kafka headers, and of the producer/consumer
//! instrumentation on a whole record round trip.
//!
//! - `kafka_carrier/*`: injecting a context into rdkafka `OwnedHeaders` (rebuilding a record's
//!   headers without its stale trace headers) and extracting one from `BorrowedHeaders`,
//!   through the W3C trace-context + baggage propagators, beside hand-inserting a fixed
//!   `traceparent` header (the floor: what rdkafka itself costs).
//! - `kafka_roundtrip/*`: send one record and receive it back on rdkafka's in-process mock
//!   cluster, bare rdkafka against the tracewire wrappers (producer span, header injection,
//!   extraction, process span, metrics). Spans go through a batch processor into an exporter
//!   that discards them.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, global};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracewire_benches::Discard;
use tracewire_kafka::carrier::{extract_context, inject_headers};
use tracewire_kafka::rdkafka::Offset;
use tracewire_kafka::rdkafka::config::ClientConfig;
use tracewire_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use tracewire_kafka::rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use tracewire_kafka::rdkafka::mocking::MockCluster;
use tracewire_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use tracewire_kafka::rdkafka::topic_partition_list::TopicPartitionList;
use tracewire_kafka::{TracedConsumer, TracedProducer};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn install_propagators() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// A record's headers as they typically arrive: a couple of application headers and the
/// producer's `traceparent`.
fn received_headers() -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "event-type",
            value: Some("order.placed"),
        })
        .insert(Header {
            key: "traceparent",
            value: Some(TRACEPARENT),
        })
}

fn remote_context() -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    ))
}

fn carrier(c: &mut Criterion) {
    install_propagators();
    let cx = remote_context();
    let received = received_headers();
    let app_headers = OwnedHeaders::new()
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "event-type",
            value: Some("order.placed"),
        });

    let mut group = c.benchmark_group("kafka_carrier");
    group.bench_function("bare_insert_fixed_traceparent", |b| {
        b.iter(|| {
            std::hint::black_box(OwnedHeaders::new_with_capacity(4).insert(Header {
                key: "traceparent",
                value: Some(TRACEPARENT),
            }))
        })
    });
    group.bench_function("propagators_inject_into_hashmap", |b| {
        b.iter(|| {
            let mut map = std::collections::HashMap::<String, String>::new();
            global::get_text_map_propagator(|p| p.inject_context(&cx, &mut map));
            std::hint::black_box(map)
        })
    });
    group.bench_function("inject_new_headers", |b| {
        b.iter(|| std::hint::black_box(inject_headers::<OwnedHeaders>(&cx, None)))
    });
    group.bench_function("inject_rebuilding_3_headers", |b| {
        b.iter(|| std::hint::black_box(inject_headers(&cx, Some(&received))))
    });
    group.bench_function("inject_keeping_2_app_headers", |b| {
        b.iter(|| std::hint::black_box(inject_headers(&cx, Some(&app_headers))))
    });
    let borrowed = received.as_borrowed();
    group.bench_function("bare_scan_for_traceparent", |b| {
        b.iter(|| {
            std::hint::black_box(
                borrowed
                    .iter()
                    .filter(|h| h.key == "traceparent")
                    .last()
                    .and_then(|h| h.value)
                    .map(std::str::from_utf8),
            )
        })
    });
    let map: std::collections::HashMap<String, String> = [
        ("content-type", "application/json"),
        ("event-type", "order.placed"),
        ("traceparent", TRACEPARENT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    group.bench_function("propagators_extract_from_hashmap", |b| {
        b.iter(|| std::hint::black_box(global::get_text_map_propagator(|p| p.extract(&map))))
    });
    group.bench_function("extract_borrowed_3_headers", |b| {
        b.iter(|| {
            let cx = extract_context(Some(borrowed));
            assert!(cx.span().span_context().is_valid());
            std::hint::black_box(cx)
        })
    });
    group.finish();
}

/// A full context: `traceparent`, `tracestate` and two baggage entries.
fn full_context() -> Context {
    use opentelemetry::KeyValue;
    use opentelemetry::baggage::BaggageExt;
    Context::new()
        .with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "opaque")]).unwrap(),
        ))
        .with_baggage([
            KeyValue::new("tenant", "acme"),
            KeyValue::new("region", "eu"),
        ])
}

/// A full context through the SDK propagators (trace context + baggage, the previous
/// default) and through tracewire's W3C codec (the default now), in one run.
fn carrier_full(c: &mut Criterion) {
    use opentelemetry::baggage::BaggageExt;
    let cx = full_context();
    let mut group = c.benchmark_group("kafka_carrier_full");
    for (name, w3c) in [("sdk_propagators", false), ("tracewire_codec", true)] {
        if w3c {
            global::set_text_map_propagator(tracewire::propagation::W3cPropagator::new());
        } else {
            install_propagators();
        }
        let headers = inject_headers::<OwnedHeaders>(&cx, None);
        assert_eq!(headers.count(), 3);
        let back = extract_context(Some(&headers));
        assert_eq!(back.span().span_context(), cx.span().span_context());
        assert_eq!(back.baggage().len(), 2);
        group.bench_function(format!("inject/{name}"), |b| {
            b.iter(|| {
                std::hint::black_box(inject_headers::<OwnedHeaders>(
                    std::hint::black_box(&cx),
                    None,
                ))
            })
        });
        let borrowed = headers.as_borrowed();
        group.bench_function(format!("extract/{name}"), |b| {
            b.iter(|| std::hint::black_box(extract_context(Some(std::hint::black_box(borrowed)))))
        });
    }
    group.finish();
    install_propagators();
}

fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1");
    config
}

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0");
    config
}

fn assign(consumer: &impl Consumer, topic: &str) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
}

fn roundtrip(c: &mut Criterion) {
    install_propagators();
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .build();
    global::set_tracer_provider(tracer_provider.clone());
    let meter_provider = SdkMeterProvider::builder().build();
    global::set_meter_provider(meter_provider.clone());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("bench.bare", 1, 1).unwrap();
    cluster.create_topic("bench.traced", 1, 1).unwrap();

    let mut group = c.benchmark_group("kafka_roundtrip");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));

    {
        let producer: FutureProducer = producer_config(&bootstrap).create().unwrap();
        let consumer: StreamConsumer = consumer_config(&bootstrap, "bench-bare").create().unwrap();
        assign(&consumer, "bench.bare");
        group.bench_function("bare_rdkafka", |b| {
            b.to_async(&rt).iter(|| async {
                producer
                    .send(
                        FutureRecord::<str, str>::to("bench.bare")
                            .payload("{\"order\":7}")
                            .headers(OwnedHeaders::new().insert(Header {
                                key: "content-type",
                                value: Some("application/json"),
                            })),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                let msg = consumer.recv().await.unwrap();
                std::hint::black_box(msg.payload());
            })
        });
    }

    let producer = TracedProducer::from_config(&producer_config(&bootstrap)).unwrap();
    let consumer =
        TracedConsumer::from_config(&consumer_config(&bootstrap, "bench-traced")).unwrap();
    assign(consumer.inner(), "bench.traced");
    group.bench_function("tracewire", |b| {
        b.to_async(&rt).iter(|| async {
            producer
                .send_record(
                    FutureRecord::<str, str>::to("bench.traced")
                        .payload("{\"order\":7}")
                        .headers(OwnedHeaders::new().insert(Header {
                            key: "content-type",
                            value: Some("application/json"),
                        })),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            let msg = consumer.recv().await.unwrap();
            consumer
                .process(&msg, async {
                    std::hint::black_box(msg.payload());
                    Ok::<(), std::io::Error>(())
                })
                .await
                .unwrap();
        })
    });
    group.finish();
    let _ = tracer_provider.shutdown();
    let _ = meter_provider.shutdown();
}

criterion_group!(benches, carrier, carrier_full, roundtrip);
criterion_main!(benches);
