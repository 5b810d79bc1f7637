//! The four-service pipeline (`examples/pipeline/`), run as users run it: four processes, the
//! real RabbitMQ and Kafka (tansu) brokers, one OTLP receiver. One order placed over HTTP is one
//! trace across orders → RabbitMQ → billing → Kafka → shipping → HTTP → inventory, with the
//! billing retry and the inventory 503 inside it as extra attempts; every service's log lines
//! carry the trace id; every hop reports its metrics.
//!
//! The brokers must be running (`scripts/test` starts them; by hand: `scripts/ensure-rabbitmq`
//! and `scripts/ensure-tansu`). Without them the test fails, it never skips.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::process::Service;
use common::trace_id_of;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tracewire_test::{OtlpReceiver, ReceivedMetricPoint, ReceivedSpan};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const STATUS_ERROR: i32 = 2;

/// A metric point that must have been exported: service, metric name, attributes it carries.
type Expected<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Spans of one order with a billing retry and an inventory 503: orders 3 (server, validate,
/// publish), billing 6 (two process attempts, two charges, retry publish, Kafka send), shipping
/// 3 (process, two client attempts), inventory 4 (two servers, two reserves).
const SPANS_PER_ORDER: usize = 16;

/// Fails loudly when a broker the pipeline needs does not answer.
fn require_broker(what: &str, addr: &str, script: &str) {
    if let Err(error) = std::net::TcpStream::connect(addr) {
        panic!(
            "{what} does not answer on {addr} ({error}): start it with {script} (scripts/test does)"
        );
    }
}

async fn post_json(url: &str, body: &str) -> (u16, http::HeaderMap, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"));
    (status, headers, json)
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    kind: i32,
    name: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.resource["service.name"] == service && s.kind == kind && s.name == name && pred(s)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name:?} span (kind {kind}) from {service}, found {found:#?}\nall spans: {spans:#?}"
    );
    found[0]
}

fn has_point(
    points: &[ReceivedMetricPoint],
    service: &str,
    name: &str,
    attrs: &[(&str, &str)],
) -> bool {
    points.iter().any(|p| {
        p.name == name
            && p.resource.get("service.name").map(String::as_str) == Some(service)
            && attrs
                .iter()
                .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_four_services_retries_included() {
    let amqp_addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    // host:port of amqp://user:password@host:port/vhost
    let authority = amqp_addr
        .split_once("://")
        .map_or(amqp_addr.as_str(), |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let amqp_host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5672")
    };
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    require_broker("RabbitMQ", &amqp_host, "scripts/ensure-rabbitmq");
    require_broker(
        "The Kafka broker",
        brokers.split(',').next().unwrap_or_default(),
        "scripts/ensure-tansu",
    );

    // Names of this run only, so runs never see each other's messages.
    let run = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let queue = format!("tracewire.e2e.orders.{run}");
    let topic = format!("tracewire.e2e.payments.{run}");
    let group = format!("tracewire-e2e-shipping-{run}");

    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let env = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_owned()),
            ("AMQP_ADDR", amqp_addr.clone()),
            ("KAFKA_BROKERS", brokers.clone()),
            ("ORDERS_QUEUE", queue.clone()),
            ("PAYMENTS_TOPIC", topic.clone()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let start = |exe: &str, ready: &str, worker: bool, env: Vec<(&'static str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if worker {
            Service::start_worker(exe, ready, &env)
        } else {
            Service::start(exe, ready, &env)
        }
    };

    // Every first attempt fails: the billing charge once, the inventory reservation once.
    let inventory = start(
        env!("CARGO_BIN_EXE_pipeline-inventory"),
        "inventory listening",
        false,
        env(&[("INVENTORY_UNAVAILABLE_PERCENT", "100".to_owned())]),
    );
    let shipping = start(
        env!("CARGO_BIN_EXE_pipeline-shipping"),
        "shipping ready",
        true,
        env(&[
            ("INVENTORY_URL", format!("http://{}", inventory.addr)),
            ("SHIPPING_GROUP", group.clone()),
            ("SHIPPING_RETRY_DELAY_MS", "50".to_owned()),
        ]),
    );
    let billing = start(
        env!("CARGO_BIN_EXE_pipeline-billing"),
        "billing ready",
        true,
        env(&[
            ("BILLING_FAIL_FIRST_ATTEMPT_PERCENT", "100".to_owned()),
            ("BILLING_RETRY_DELAY_MS", "200".to_owned()),
        ]),
    );
    let orders = start(
        env!("CARGO_BIN_EXE_pipeline-orders"),
        "orders listening",
        false,
        env(&[]),
    );

    // An invalid order is refused before anything is published.
    let (status, _, body) = post_json(&orders.url("/orders"), r#"{"item":"","quantity":1}"#).await;
    assert_eq!(status, 422, "{body}");

    let (status, headers, body) =
        post_json(&orders.url("/orders"), r#"{"item":"book","quantity":2}"#).await;
    assert_eq!(status, 202, "{body}");
    let order_id = body["order_id"].as_str().expect("order_id").to_owned();
    let traceparent = body["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_owned();
    assert_eq!(headers["traceparent"].to_str().unwrap(), traceparent);
    let trace_id = trace_id_of(&traceparent).to_owned();
    assert_eq!(trace_id.len(), 32, "{traceparent}");

    // Wait until the whole order has gone through and its spans have been exported.
    let deadline = Instant::now() + Duration::from_secs(40);
    let spans = loop {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        if spans.len() >= SPANS_PER_ORDER {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {SPANS_PER_ORDER} spans of trace {trace_id} arrived: {spans:#?}\n\
             orders: {:?}\nbilling: {:?}\nshipping: {:?}\ninventory: {:?}",
            spans.len(),
            orders.logs(),
            billing.logs(),
            shipping.logs(),
            inventory.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Nothing of this order started a trace of its own: every span billing, shipping and
    // inventory exported (they saw only this order) is in this one.
    let stray: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != trace_id && s.resource["service.name"] != "orders")
        .collect();
    assert!(
        stray.is_empty(),
        "spans outside the order's trace: {stray:#?}"
    );
    assert_eq!(spans.len(), SPANS_PER_ORDER, "{spans:#?}");
    let services: BTreeSet<&str> = spans
        .iter()
        .map(|s| s.resource["service.name"].as_str())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["billing", "inventory", "orders", "shipping"])
    );

    // orders: HTTP server → validate, AMQP producer.
    let server = find(&spans, "orders", SERVER, "POST /orders", |_| true);
    assert_eq!(server.parent_span_id, "", "the order starts the trace");
    assert!(
        traceparent.contains(&server.span_id),
        "202 names the server span"
    );
    assert_eq!(server.attributes["http.route"], "/orders");
    assert_eq!(server.attributes["http.response.status_code"], "202");
    let validate = find(&spans, "orders", 1, "validate", |_| true);
    assert_eq!(validate.parent_span_id, server.span_id);
    let publish = find(
        &spans,
        "orders",
        PRODUCER,
        &format!("publish {queue}"),
        |_| true,
    );
    assert_eq!(publish.parent_span_id, server.span_id);
    assert_eq!(publish.attributes["messaging.system"], "rabbitmq");
    assert_eq!(publish.attributes["messaging.destination.name"], queue);
    assert_eq!(publish.attributes["messaging.message.id"], order_id);

    // billing: AMQP consumer (attempt 1, fails) → retry publish → AMQP consumer (attempt 2) →
    // Kafka producer.
    let process = format!("process {queue}");
    let attempt =
        |n: &'static str| move |s: &ReceivedSpan| s.attributes["messaging.message.attempt"] == n;
    let attempt1 = find(&spans, "billing", CONSUMER, &process, attempt("1"));
    assert_eq!(attempt1.parent_span_id, publish.span_id);
    assert_eq!(attempt1.attributes["messaging.message.outcome"], "retry");
    assert_eq!(attempt1.status_code, STATUS_ERROR);
    let charge1 = find(&spans, "billing", 1, "charge", |s| {
        s.parent_span_id == attempt1.span_id
    });
    assert_eq!(charge1.status_code, STATUS_ERROR);
    assert_eq!(charge1.attributes["error.type"], "PaymentDeclined");
    assert_eq!(charge1.attributes["order.id"], order_id);
    let retry_publish = find(
        &spans,
        "billing",
        PRODUCER,
        &format!("publish {queue}.retry"),
        |_| true,
    );
    assert_eq!(retry_publish.parent_span_id, attempt1.span_id);
    assert_eq!(retry_publish.attributes["messaging.message.attempt"], "2");
    let attempt2 = find(&spans, "billing", CONSUMER, &process, attempt("2"));
    assert_eq!(attempt2.parent_span_id, retry_publish.span_id);
    assert_eq!(attempt2.attributes["messaging.message.outcome"], "ack");
    assert_ne!(attempt2.status_code, STATUS_ERROR);
    let charge2 = find(&spans, "billing", 1, "charge", |s| {
        s.parent_span_id == attempt2.span_id
    });
    assert_ne!(charge2.status_code, STATUS_ERROR);
    let send = find(
        &spans,
        "billing",
        PRODUCER,
        &format!("send {topic}"),
        |_| true,
    );
    assert_eq!(send.parent_span_id, attempt2.span_id);
    assert_eq!(send.attributes["messaging.system"], "kafka");
    assert_eq!(send.attributes["messaging.destination.name"], topic);

    // shipping: Kafka consumer → HTTP client, one span per attempt.
    let consume = find(
        &spans,
        "shipping",
        CONSUMER,
        &format!("process {topic}"),
        |_| true,
    );
    assert_eq!(consume.parent_span_id, send.span_id);
    assert_eq!(consume.attributes["messaging.system"], "kafka");
    assert_eq!(consume.attributes["messaging.consumer.group.name"], group);
    assert_ne!(consume.status_code, STATUS_ERROR);
    let refused = find(&spans, "shipping", CLIENT, "POST", |s| {
        s.attributes["http.response.status_code"] == "503"
    });
    let accepted = find(&spans, "shipping", CLIENT, "POST", |s| {
        s.attributes["http.response.status_code"] == "201"
    });
    for client in [refused, accepted] {
        assert_eq!(client.parent_span_id, consume.span_id);
    }
    assert_eq!(refused.status_code, STATUS_ERROR);
    assert!(!refused.attributes.contains_key("http.request.resend_count"));
    assert_eq!(accepted.attributes["http.request.resend_count"], "1");

    // inventory: one HTTP server span under each client attempt.
    let reservations = "POST /reservations";
    let unavailable = find(&spans, "inventory", SERVER, reservations, |s| {
        s.parent_span_id == refused.span_id
    });
    assert_eq!(unavailable.attributes["http.response.status_code"], "503");
    assert_eq!(unavailable.status_code, STATUS_ERROR);
    let created = find(&spans, "inventory", SERVER, reservations, |s| {
        s.parent_span_id == accepted.span_id
    });
    assert_eq!(created.attributes["http.response.status_code"], "201");
    for server in [unavailable, created] {
        find(&spans, "inventory", 1, "reserve", |s| {
            s.parent_span_id == server.span_id
        });
    }

    // Every service's log lines of the order carry its trace id, and the span they were
    // written in.
    let logged = |service: &Service, message: &str, span: &ReceivedSpan| {
        service
            .logs_of_trace(&trace_id)
            .iter()
            .any(|l| l["message"] == message && l["span_id"] == span.span_id.as_str())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = [
            logged(&orders, "order.created published", server),
            logged(&billing, "charge failed, retrying later", attempt1),
            logged(&billing, "payment.captured sent", attempt2),
            logged(&shipping, "stock reserved, shipment scheduled", consume),
            logged(&inventory, "reservation refused", unavailable),
            logged(&inventory, "stock reserved", created),
        ];
        if all.iter().all(|ok| *ok) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log lines missing {all:?}\norders: {:?}\nbilling: {:?}\nshipping: {:?}\ninventory: {:?}",
            orders.logs_of_trace(&trace_id),
            billing.logs_of_trace(&trace_id),
            shipping.logs_of_trace(&trace_id),
            inventory.logs_of_trace(&trace_id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stopping flushes the last metrics; each service exits cleanly on SIGTERM.
    for service in [orders, billing, shipping, inventory] {
        let lines = service.lines.clone();
        let status = service.terminate();
        assert!(status.success(), "{status}");
        let errors: Vec<Value> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["level"] == "ERROR")
            .cloned()
            .collect();
        assert!(errors.is_empty(), "error lines: {errors:#?}");
    }
    let points = receiver.metric_points();
    let retry_queue = format!("{queue}.retry");
    let expected: &[Expected<'_>] = &[
        // orders: the HTTP server hop and the AMQP publish.
        (
            "orders",
            "http.server.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.route", "/orders"),
                ("http.response.status_code", "202"),
            ],
        ),
        (
            "orders",
            "http.server.request.duration",
            &[
                ("http.route", "/orders"),
                ("http.response.status_code", "422"),
            ],
        ),
        (
            "orders",
            "messaging.client.sent.messages",
            &[
                ("messaging.system", "rabbitmq"),
                ("messaging.destination.name", &queue),
            ],
        ),
        (
            "orders",
            "function.calls",
            &[("function", "validate"), ("result", "error")],
        ),
        // billing: AMQP consume and process (one failed attempt), the retry publish, the
        // charge, the Kafka send.
        (
            "billing",
            "messaging.client.consumed.messages",
            &[
                ("messaging.system", "rabbitmq"),
                ("messaging.destination.name", &queue),
            ],
        ),
        (
            "billing",
            "messaging.process.duration",
            &[
                ("messaging.system", "rabbitmq"),
                ("messaging.destination.name", &queue),
                ("error.type", "BillingError"),
            ],
        ),
        (
            "billing",
            "messaging.client.sent.messages",
            &[
                ("messaging.system", "rabbitmq"),
                ("messaging.destination.name", &retry_queue),
            ],
        ),
        (
            "billing",
            "function.calls",
            &[("function", "charge"), ("result", "error")],
        ),
        (
            "billing",
            "function.calls",
            &[("function", "charge"), ("result", "ok")],
        ),
        (
            "billing",
            "messaging.client.sent.messages",
            &[
                ("messaging.system", "kafka"),
                ("messaging.destination.name", &topic),
            ],
        ),
        // shipping: Kafka consume and process, the HTTP client attempts.
        (
            "shipping",
            "messaging.client.consumed.messages",
            &[
                ("messaging.system", "kafka"),
                ("messaging.destination.name", &topic),
                ("messaging.consumer.group.name", &group),
            ],
        ),
        (
            "shipping",
            "messaging.process.duration",
            &[
                ("messaging.system", "kafka"),
                ("messaging.destination.name", &topic),
            ],
        ),
        (
            "shipping",
            "http.client.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.response.status_code", "503"),
            ],
        ),
        (
            "shipping",
            "http.client.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.response.status_code", "201"),
            ],
        ),
        // inventory: the HTTP server hop, refused and accepted.
        (
            "inventory",
            "http.server.request.duration",
            &[
                ("http.route", "/reservations"),
                ("http.response.status_code", "503"),
            ],
        ),
        (
            "inventory",
            "http.server.request.duration",
            &[
                ("http.route", "/reservations"),
                ("http.response.status_code", "201"),
            ],
        ),
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|(service, name, attrs)| !has_point(&points, service, name, attrs))
        .collect();
    assert!(
        missing.is_empty(),
        "metric points missing: {missing:#?}\nreceived: {:#?}",
        points
            .iter()
            .map(|p| (&p.resource["service.name"], &p.name, &p.attributes))
            .collect::<BTreeSet<_>>()
    );
}
