//! The tail processor behind a real HTTP server: a span that ends after its root, and the
//! bounds of the buffer, each overflow counted.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use opentelemetry::trace::{Span as _, Status, Tracer, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor, SpanData,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracewire::sampling::{ConsistentSampler, Decisions, Limits, TailProcessor};

struct Pipeline {
    exporter: InMemorySpanExporter,
    decisions: Arc<Decisions>,
    addr: SocketAddr,
}

#[derive(serde::Deserialize)]
struct Params {
    fail: Option<bool>,
    spans: Option<usize>,
    hold: Option<u64>,
}

async fn handler(Query(p): Query<Params>) -> &'static str {
    let tracer = global::tracer("test");
    for i in 0..p.spans.unwrap_or(0) {
        let mut span = tracer.start(format!("step {i}"));
        span.end();
    }
    if let Some(ms) = p.hold {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // Work that outlives the request: its span starts now and ends after the server span.
    let mut span = tracer.start_with_context("late work", &Context::current());
    let fail = p.fail.unwrap_or(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if fail {
            span.set_status(Status::error("late failure"));
        }
        span.end();
    });
    "ok"
}

/// One pipeline per test process: ratio 0, tail decision, small bounds.
fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let tail = TailProcessor::new(
            SimpleSpanProcessor::new(exporter.clone()),
            Duration::from_secs(10),
        )
        .with_limits(Limits {
            max_traces: 3,
            max_spans_per_trace: 5,
            max_wait: Duration::from_secs(30),
        });
        let decisions = tail.decisions();
        let provider = SdkTracerProvider::builder()
            .with_sampler(ConsistentSampler::new(0.0, Vec::new(), true))
            .with_span_processor(tail)
            .build();
        global::set_tracer_provider(provider.clone());
        global::set_text_map_propagator(TraceContextPropagator::new());
        let _ = provider.tracer("warm");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let app = Router::new()
                    .route("/work", get(handler))
                    .layer(tracewire::http::ServerLayer::new());
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Pipeline {
            exporter,
            decisions,
            addr,
        }
    })
}

/// `GET path` over a plain TCP connection: the trace id of the answer's `traceparent`.
async fn request(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .and_then(|tp| tp.split('-').nth(1))
        .expect("traceparent in the answer")
        .to_owned()
}

fn exported(trace_id: &str) -> Vec<SpanData> {
    pipeline()
        .exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect()
}

async fn wait_for(trace_id: &str, n: usize) -> Vec<SpanData> {
    for _ in 0..100 {
        let spans = exported(trace_id);
        if spans.len() >= n {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exported(trace_id)
}

#[tokio::test]
async fn a_span_failing_after_its_root_keeps_the_whole_trace() {
    let p = pipeline();
    let trace_id = request(p.addr, "/work?fail=true").await;
    let spans = wait_for(&trace_id, 2).await;
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, ["GET /work", "late work"]);
    let server = spans.iter().find(|s| s.name == "GET /work").unwrap();
    let late = spans.iter().find(|s| s.name == "late work").unwrap();
    assert_eq!(late.parent_span_id, server.span_context.span_id());
    assert!(
        late.end_time > server.end_time,
        "the late span ended after its root"
    );
    assert!(spans.iter().all(|s| s.span_context.is_sampled()));
    assert!(p.decisions.count("error") >= 1);
}

#[tokio::test]
async fn a_late_span_of_an_ordinary_trace_does_not_leak() {
    let p = pipeline();
    let before = p.decisions.count("dropped");
    let trace_id = request(p.addr, "/work").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(exported(&trace_id).is_empty(), "{:?}", exported(&trace_id));
    assert!(p.decisions.count("dropped") > before);
}

#[tokio::test]
async fn too_many_spans_in_one_trace_is_decided_early_and_counted() {
    let p = pipeline();
    let before = p.decisions.overflow("spans");
    let trace_id = request(p.addr, "/work?spans=8").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(p.decisions.overflow("spans") > before);
    // Decided with what was known (nothing failed): dropped, and so are its later spans.
    assert!(exported(&trace_id).is_empty());
}

#[tokio::test]
async fn too_many_traces_in_flight_are_decided_early_and_counted() {
    let p = pipeline();
    let before = p.decisions.overflow("traces");
    let requests: Vec<_> = (0..8)
        .map(|_| tokio::spawn(request(p.addr, "/work?hold=400")))
        .collect();
    for r in requests {
        r.await.unwrap();
    }
    let overflowed = p.decisions.overflow("traces") - before;
    assert!(
        overflowed >= 4,
        "8 traces at once, room for 3: {overflowed}"
    );
}
