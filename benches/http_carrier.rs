//! Cost of carrying a full context (`traceparent`, `tracestate` and two baggage entries)
//! through an `http::HeaderMap`: inject into fresh headers, extract from them.
//!
//! Two propagators in the same run: OpenTelemetry's SDK propagators (trace context +
//! baggage, the previous default) and tracewire's W3C codec (the default now). Baseline: the
//! SDK propagators over a `HashMap<String, String>`.

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
