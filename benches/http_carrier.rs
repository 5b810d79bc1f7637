//! Cost of carrying a full context (`traceparent`, `tracestate` and two baggage entries)
//! through an `http::HeaderMap`: inject into fresh headers, extract from them.
//!
//! Two propagators in the same run: OpenTelemetry's SDK propagators (trace context +
//! baggage, the previous default) and tracewire's W3C codec (the default now). Baseline: the
//! SDK propagators over a `HashMap<String, String>`.
//!
//! Two floors, what any propagator working with these types pays at least:
//! `inject/header_inserts_floor` copies the three finished header values into a fresh
//! `HeaderMap` (no formatting); `extract/sdk_types_floor` builds the extracted context from
//! parts already parsed (the ids as numbers, the tracestate and baggage text as owned
//! strings): the SDK's `TraceState`, `SpanContext`, `Baggage` and `Context`, no parsing.

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracewire_http::propagation::{extract_headers, inject_headers};

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

fn sdk_propagators() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

fn bench(c: &mut Criterion) {
    let cx = full_context();
    let mut group = c.benchmark_group("http_carrier");

    sdk_propagators();
    let mut map: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut map));
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

    {
        let mut finished = HeaderMap::new();
        inject_headers(&cx, &mut finished);
        let values: Vec<(http::HeaderName, String)> = finished
            .iter()
            .map(|(name, value)| (name.clone(), value.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(values.len(), 3);
        group.bench_function("inject/header_inserts_floor", |b| {
            b.iter(|| {
                let mut out = HeaderMap::new();
                for (name, value) in std::hint::black_box(&values) {
                    out.insert(name.clone(), http::HeaderValue::from_str(value).unwrap());
                }
                out
            })
        });
        group.bench_function("extract/sdk_types_floor", |b| {
            b.iter(|| {
                let owned = |s: &str| String::from(std::hint::black_box(s));
                let state = TraceState::from_key_value([(owned("vendor"), owned("opaque"))])
                    .expect("trace state");
                let span = SpanContext::new(
                    TraceId::from(std::hint::black_box(
                        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                    )),
                    SpanId::from(std::hint::black_box(0x00f0_67aa_0ba9_02b7)),
                    TraceFlags::SAMPLED,
                    true,
                    state,
                );
                Context::new().with_remote_span_context(span).with_baggage([
                    KeyValue::new(owned("tenant"), owned("acme")),
                    KeyValue::new(owned("region"), owned("eu")),
                ])
            })
        });
    }

    for (name, w3c) in [("sdk_propagators", false), ("tracewire_codec", true)] {
        if w3c {
            global::set_text_map_propagator(tracewire::propagation::W3cPropagator::new());
        } else {
            sdk_propagators();
        }
        let mut headers = HeaderMap::new();
        inject_headers(&cx, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = extract_headers(&headers);
        assert_eq!(back.span().span_context(), cx.span().span_context());
        assert_eq!(back.baggage().len(), 2);
        group.bench_function(format!("inject/{name}"), |b| {
            b.iter(|| {
                let mut out = HeaderMap::new();
                inject_headers(std::hint::black_box(&cx), &mut out);
                out
            })
        });
        group.bench_function(format!("extract/{name}"), |b| {
            b.iter(|| extract_headers(std::hint::black_box(&headers)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
