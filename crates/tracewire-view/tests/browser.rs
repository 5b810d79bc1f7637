//! The pages in headless Chromium: what a person sees on a trace page, in the trace list and
//! on the service map. Spans come from real SDK tracer providers; the map's four services
//! export over real OTLP (two over gRPC, two over HTTP/protobuf) to the standalone receiver.
//!
//! `TRACEWIRE_SCREENSHOTS=1` also writes `docs/view-trace.png` and `docs/view-map.png`.

use std::time::{Duration, Instant};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use tracewire_test::Browser;
use tracewire_view::receiver::{Config, serve};
use tracewire_view::{Limits, Recorder};
use tracing_subscriber::layer::SubscriberExt;

async fn serve_router(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn screenshot(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if std::env::var_os("TRACEWIRE_SCREENSHOTS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/").to_owned() + name;
        std::fs::write(&path, png).unwrap();
    }
}

/// One order: a server span, a function with a failing query and a retry, a render step.
fn record_order(provider: &SdkTracerProvider) -> String {
    let tracer = provider.tracer("orders");
    let server = tracer
        .span_builder("GET /orders/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/orders/{id}"),
            KeyValue::new("http.response.status_code", 200),
        ])
        .start(&tracer);
    let trace_id = server.span_context().trace_id().to_string();
    let cx = Context::current_with_span(server);
    {
        let _g = cx.clone().attach();
        tracing::info!(
            order_id = 42,
            authorization = "Bearer s3cret",
            "loading order"
        );
    }
    let load = tracer
        .span_builder("load_order")
        .with_attributes([KeyValue::new("code.function.name", "orders::load_order")])
        .start_with_context(&tracer, &cx);
    let load_cx = cx.with_span(load);
    let mut query = tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &load_cx);
    query.add_event(
        "exception",
        vec![KeyValue::new("exception.message", "connection reset")],
    );
    query.set_attribute(KeyValue::new("error.type", "ConnectionReset"));
    query.set_status(Status::error("connection reset"));
    {
        let _g = load_cx.clone().with_span(query).attach();
        tracing::warn!("query failed, retrying");
    }
    std::thread::sleep(Duration::from_millis(3));
    tracer
        .span_builder("SELECT orders (retry)")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &load_cx)
        .end();
    load_cx.span().end();
    tracer
        .span_builder("render")
        .start_with_context(&tracer, &cx)
        .end();
    cx.span().end();
    trace_id
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_page_shows_the_waterfall_the_error_and_the_log_lines() {
    let recorder = Recorder::new("orders", Limits::default());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(recorder.processor())
        .build();
    let app = axum::Router::new().nest_service("/_tracewire", recorder.service("/_tracewire"));
    let addr = serve_router(app).await;
    let subscriber = tracing_subscriber::registry().with(recorder.log_layer());
    let trace_id = tracing::subscriber::with_default(subscriber, || record_order(&provider));
    recorder.sync();

    let browser = Browser::start(1280, 760).await;
    browser
        .goto(&format!("http://{addr}/_tracewire/traces/{trace_id}"))
        .await;
    assert_eq!(
        browser.texts(".waterfall summary .label").await,
        [
            "GET /orders/{id}",
            "load_order",
            "SELECT orders",
            "SELECT orders (retry)",
            "render"
        ],
        "span names in waterfall order"
    );
    assert_eq!(
        browser.texts(".waterfall .span.error summary .label").await,
        ["SELECT orders"]
    );
    assert_eq!(
        browser.texts(".waterfall .span.error summary .mark").await,
        ["error"]
    );
    assert_eq!(browser.texts("#trace-id").await, [trace_id.as_str()]);

    // Open the failing span: its attributes, its exception event and its log line.
    let failing = browser
        .attributes(".waterfall .span.error", "id")
        .await
        .remove(0)
        .unwrap();
    browser.click(&format!("#{failing} > summary")).await;
    let detail = browser
        .texts(&format!("#{failing} .detail"))
        .await
        .remove(0);
    for expected in [
        "error.type",
        "ConnectionReset",
        "exception",
        "connection reset",
        "query failed, retrying",
    ] {
        assert!(detail.contains(expected), "{expected:?} not in {detail:?}");
    }
    // The server span's log line, its sensitive field redacted as in the JSON logs.
    browser.click(".waterfall .span > summary").await;
    let server = browser.texts(".waterfall .span .detail").await.remove(0);
    assert!(server.contains("loading order"), "{server}");
    assert!(server.contains("order_id=42"), "{server}");
    assert!(server.contains("authorization=REDACTED"), "{server}");
    assert!(!server.contains("s3cret"), "{server}");
    screenshot("view-trace.png", &browser.screenshot().await);

    // The list: search by route, by status, by minimum duration.
    browser
        .goto(&format!(
            "http://{addr}/_tracewire/?q=%2Forders&status=error"
        ))
        .await;
    assert_eq!(
        browser
            .texts("table.traces tbody tr td:nth-child(2) a")
            .await,
        [trace_id.as_str()]
    );
    browser
        .goto(&format!("http://{addr}/_tracewire/?status=ok"))
        .await;
    assert!(browser.texts("table.traces tbody tr").await.is_empty());
    browser
        .goto(&format!("http://{addr}/_tracewire/?min_ms=60000"))
        .await;
    assert!(browser.texts("table.traces tbody tr").await.is_empty());
    browser
        .goto(&format!("http://{addr}/_tracewire/?q={trace_id}"))
        .await;
    assert_eq!(
        browser.texts("table.traces tbody tr td:nth-child(3)").await,
        ["GET /orders/{id}"]
    );

    // The RED table: the route and the function.
    browser.goto(&format!("http://{addr}/_tracewire/red")).await;
    let rows = browser.texts("table.red tbody tr").await;
    assert!(
        rows.iter()
            .any(|r| r.contains("route") && r.contains("GET /orders/{id}")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("function") && r.contains("orders::load_order")),
        "{rows:?}"
    );
    browser.close().await;
}

struct ExportingService {
    provider: SdkTracerProvider,
}

impl ExportingService {
    fn new(name: &str, grpc: &str, http: &str, over_grpc: bool) -> Self {
        let exporter = if over_grpc {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{grpc}"))
                .with_protocol(Protocol::Grpc)
                .build()
                .unwrap()
        } else {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("http://{http}/v1/traces"))
                .with_protocol(Protocol::HttpBinary)
                .build()
                .unwrap()
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(name.to_owned())
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        Self { provider }
    }

    fn span(
        &self,
        name: &str,
        kind: SpanKind,
        parent: &Context,
        error: bool,
    ) -> opentelemetry_sdk::trace::Span {
        let tracer = self.provider.tracer("pipeline");
        let mut span = tracer
            .span_builder(name.to_owned())
            .with_kind(kind)
            .start_with_context(&tracer, parent);
        if error {
            span.set_status(Status::error("unavailable"));
        }
        span
    }
}

/// The pipeline's shape: orders → (RabbitMQ) → billing → (Kafka) → shipping → (HTTP) → inventory.
fn one_order(services: &[ExportingService; 4], inventory_fails: bool) {
    let [orders, billing, shipping, inventory] = services;
    let root = orders.span("POST /orders", SpanKind::Server, &Context::new(), false);
    let cx = Context::new().with_span(root);
    let publish = orders.span("publish orders", SpanKind::Producer, &cx, false);
    let publish_cx = cx.with_span(publish);
    let process = billing.span("process orders", SpanKind::Consumer, &publish_cx, false);
    let process_cx = publish_cx.with_span(process);
    let send = billing.span("send payments", SpanKind::Producer, &process_cx, false);
    let send_cx = process_cx.with_span(send);
    // Kafka batches link to the message's producer instead of taking it as parent.
    let tracer = shipping.provider.tracer("pipeline");
    let consume = tracer
        .span_builder("process payments")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![opentelemetry::trace::Link::with_context(
            send_cx.span().span_context().clone(),
        )])
        .start_with_context(&tracer, &Context::new());
    let consume_cx = Context::new().with_span(consume);
    let call = shipping.span("GET", SpanKind::Client, &consume_cx, inventory_fails);
    let call_cx = consume_cx.with_span(call);
    let reserve = inventory.span(
        "POST /reservations",
        SpanKind::Server,
        &call_cx,
        inventory_fails,
    );
    let mut reserve = reserve;
    reserve.end();
    for cx in [
        &call_cx,
        &consume_cx,
        &send_cx,
        &process_cx,
        &publish_cx,
        &cx,
    ] {
        cx.span().end();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_map_shows_four_services_and_their_edges() {
    let running = serve(&Config {
        ui: "127.0.0.1:0".into(),
        otlp_grpc: "127.0.0.1:0".into(),
        otlp_http: "127.0.0.1:0".into(),
        limits: Limits::default(),
    })
    .await
    .unwrap();
    let (grpc, http) = (running.otlp_grpc.to_string(), running.otlp_http.to_string());
    let services = [
        ExportingService::new("orders", &grpc, &http, true),
        ExportingService::new("billing", &grpc, &http, false),
        ExportingService::new("shipping", &grpc, &http, true),
        ExportingService::new("inventory", &grpc, &http, false),
    ];
    for i in 0..4 {
        one_order(&services, i == 0);
    }
    for s in &services {
        s.provider.force_flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.store.stats().spans < 4 * 7 {
        assert!(
            Instant::now() < deadline,
            "spans did not arrive: {:?}",
            running.store.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ui = running.ui;
    let map: Value =
        serde_json::from_str(&reqwest_like_get(&format!("http://{ui}/api/map")).await).unwrap();
    let edges: Vec<(String, String, String, u64, f64)> = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["requests"].as_u64().unwrap(),
                e["error_rate"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            (
                "billing".into(),
                "shipping".into(),
                "message".into(),
                4,
                0.0
            ),
            ("orders".into(), "billing".into(), "message".into(), 4, 0.0),
            (
                "shipping".into(),
                "inventory".into(),
                "request".into(),
                4,
                0.25
            ),
        ]
    );

    let browser = Browser::start(1280, 620).await;
    browser.goto(&format!("http://{ui}/map")).await;
    assert_eq!(
        browser.texts("svg .node .svc").await,
        ["billing", "inventory", "orders", "shipping"]
    );
    let from = browser.attributes("svg .edge", "data-from").await;
    let to = browser.attributes("svg .edge", "data-to").await;
    let drawn: Vec<(String, String)> = from
        .into_iter()
        .zip(to)
        .map(|(f, t)| (f.unwrap(), t.unwrap()))
        .collect();
    assert_eq!(
        drawn,
        [
            ("billing".into(), "shipping".into()),
            ("orders".into(), "billing".into()),
            ("shipping".into(), "inventory".into())
        ]
    );
    let labels = browser.texts("svg .edge text").await;
    assert_eq!(labels[4], "4 req · 25% err", "{labels:?}");
    assert!(labels[5].starts_with("p99 "), "{labels:?}");
    let rows = browser.texts("table.edges tbody tr").await;
    assert!(rows[2].contains("shipping → inventory"), "{rows:?}");
    screenshot("view-map.png", &browser.screenshot().await);

    // The same pages across services. Kafka's consumer links to the producer instead of
    // continuing its trace, so the failing order's second trace holds shipping and inventory.
    browser.goto(&format!("http://{ui}/?status=error")).await;
    let listed = browser.texts("table.traces tbody tr td:nth-child(4)").await;
    assert_eq!(listed, ["inventory, shipping"]);
    browser.goto(&format!("http://{ui}/?service=orders")).await;
    let listed = browser.texts("table.traces tbody tr td:nth-child(4)").await;
    assert_eq!(listed, ["billing, orders"; 4]);
    browser.close().await;
}

/// A plain HTTP GET returning the body.
async fn reqwest_like_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}
