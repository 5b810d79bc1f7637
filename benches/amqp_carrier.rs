//! Cost of carrying a full context (`traceparent`, `tracestate` and two baggage entries)
//! through AMQP headers: inject into a fresh lapin `FieldTable`, extract from one, through the
//! W3C trace-context + baggage propagator that `tracewire::init()` installs.
//!
//! Two propagators in the same run: OpenTelemetry's SDK propagators (trace context + baggage,
//! the previous default, benches `*/field_table*`) and tracewire's W3C codec (the default now,
//! `*/tracewire_codec`). Baseline: the SDK propagators over a `HashMap<String, String>`, the
//! carrier OpenTelemetry ships (what a hand-written integration would start from).

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracewire_amqp::carrier;
use tracewire_amqp::lapin::types::{AMQPValue, FieldTable, LongString};

fn full_context() -> Context {
    let span = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
        SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "opaque")]).expect("trace state"),
    );
    Context::new().with_remote_span_context(span).with_baggage([
        KeyValue::new("tenant", "acme"),
        KeyValue::new("region", "eu"),
    ])
}

fn bench(c: &mut Criterion) {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    let cx = full_context();

    let mut table = FieldTable::default();
    carrier::inject(&cx, &mut table);
    assert_eq!(
        table.inner().get("traceparent"),
        Some(&AMQPValue::LongString(LongString::from(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )))
    );
    let mut map: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut map));

    let mut group = c.benchmark_group("amqp_carrier");
    group.bench_function("inject/field_table", |b| {
        b.iter(|| {
            let mut headers = FieldTable::default();
            carrier::inject(std::hint::black_box(&cx), &mut headers);
            headers
        })
    });
    group.bench_function("extract/field_table", |b| {
        b.iter(|| carrier::extract(Some(std::hint::black_box(&table))))
    });
    group.bench_function("inject/hashmap_baseline", |b| {
        b.iter(|| {
            let mut headers: HashMap<String, String> = HashMap::with_capacity(3);
            global::get_text_map_propagator(|p| {
                p.inject_context(std::hint::black_box(&cx), &mut headers)
            });
            headers
        })
    });
    group.bench_function("extract/hashmap_baseline", |b| {
        b.iter(|| global::get_text_map_propagator(|p| p.extract(std::hint::black_box(&map))))
    });

    // The span context alone (`traceparent` + `tracestate`, no baggage).
    let span_only = Context::new().with_remote_span_context(cx.span().span_context().clone());
    let mut span_table = FieldTable::default();
    carrier::inject(&span_only, &mut span_table);
    group.bench_function("inject/field_table_span_only", |b| {
        b.iter(|| {
            let mut headers = FieldTable::default();
            carrier::inject(std::hint::black_box(&span_only), &mut headers);
            headers
        })
    });
    group.bench_function("extract/field_table_span_only", |b| {
        b.iter(|| carrier::extract(Some(std::hint::black_box(&span_table))))
    });

    // The same full context through tracewire's codec.
    global::set_text_map_propagator(tracewire::propagation::W3cPropagator::new());
    let mut codec_table = FieldTable::default();
    carrier::inject(&cx, &mut codec_table);
    let back = carrier::extract(Some(&codec_table));
    assert_eq!(back.span().span_context(), cx.span().span_context());
    assert_eq!(back.baggage().len(), 2);
    group.bench_function("inject/tracewire_codec", |b| {
        b.iter(|| {
            let mut headers = FieldTable::default();
            carrier::inject(std::hint::black_box(&cx), &mut headers);
            headers
        })
    });
    group.bench_function("extract/tracewire_codec", |b| {
        b.iter(|| carrier::extract(Some(std::hint::black_box(&codec_table))))
    });
    group.finish();

    // Sanity: what the bench extracts is the full context.
    let back = carrier::extract(Some(&table));
    assert_eq!(back.span().span_context(), cx.span().span_context());
    assert_eq!(back.baggage().len(), 2);
}

criterion_group!(benches, bench);
criterion_main!(benches);
