//! Fuzz target functions: every parser of untrusted bytes, each with the property it must
//! keep. Called by the libFuzzer binaries in `fuzz_targets/` and, over the committed corpora,
//! by the workspace test `tests/fuzz_corpora.rs`.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, ServiceExt, service_fn};
use tracewire_core::logs::JsonLayer;
use tracing_subscriber::prelude::*;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits `data` into up to `n` lossily decoded strings at `0xff` bytes.
fn parts(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data
        .splitn(n, |&b| b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    out.resize(n, String::new());
    out
}

/// The JSON log encoder: whatever the message and field values, every line parses with
/// serde_json and carries the exact message and fields.
pub fn json_log(data: &[u8]) {
    let [message, text, shown, span_field, number]: [String; 5] =
        parts(data, 5).try_into().unwrap();
    let number = number
        .bytes()
        .fold(0i64, |n, b| n.wrapping_mul(31).wrapping_add(b as i64));
    let buf = Buf::default();
    let writer = buf.clone();
    let layer = JsonLayer::new()
        .with_static_field("service.name", &text)
        .with_writer(move || writer.clone());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("outer", tenant = %span_field);
        let _entered = span.enter();
        tracing::warn!(
            text = %text,
            debug = ?shown,
            number,
            flag = true,
            authorization = %text,
            level = %shown,
            "{message}"
        );
    });
    let bytes = buf.0.lock().unwrap().clone();
    let out = String::from_utf8(bytes).expect("log lines are UTF-8");
    assert!(out.ends_with('\n'));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one event, one line: {out:?}");
    let line: serde_json::Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", lines[0]));
    assert_eq!(line["message"], message.as_str());
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["service.name"], text.as_str());
    assert_eq!(line["tenant"], span_field.as_str());
    assert_eq!(line["text"], text.as_str());
    assert_eq!(line["debug"], format!("{shown:?}").as_str());
    assert_eq!(line["number"], number);
    assert_eq!(line["flag"], true);
    assert_eq!(line["authorization"], "REDACTED");
    assert_eq!(line["field.level"], shown.as_str());
}

/// Header names the HTTP target picks from, so the fuzzer reaches the propagation parsers
/// without having to guess their names.
const NAMES: [&str; 6] = [
    "traceparent",
    "tracestate",
    "baggage",
    "x-request-id",
    "x-correlation-id",
    "authorization",
];

fn tracer_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        opentelemetry::global::set_tracer_provider(provider);
        opentelemetry::global::set_text_map_propagator(
            opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
                Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
            ]),
        );
    });
}

/// HTTP propagation headers and the request id through the server layer: any header bytes
/// give a served request, a well-formed response `traceparent` and a request id, never a panic.
pub fn http_headers(data: &[u8]) {
    tracer_provider();
    let mut request = Request::builder().uri("/orders/1");
    for chunk in data.split(|&b| b == b'\n') {
        let Some((&pick, value)) = chunk.split_first() else {
            continue;
        };
        let name = match NAMES.get(usize::from(pick % 8)) {
            Some(name) => HeaderName::from_static(name),
            None => match value.iter().position(|&b| b == b':') {
                Some(i) => match HeaderName::from_bytes(&value[..i]) {
                    Ok(name) => name,
                    Err(_) => continue,
                },
                None => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(name, value);
        }
    }
    let Ok(request) = request.body(String::new()) else {
        return;
    };
    let service = tracewire_http::ServerLayer::new().layer(service_fn(|_req| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
    }));
    // Around a service that is ready at once, the layer's future completes on its first poll.
    let response = service
        .oneshot(request)
        .now_or_never()
        .expect("completes at once")
        .expect("infallible");
    assert_eq!(response.status(), 200);
    if let Some(tp) = response.headers().get("traceparent") {
        let tp = tp.to_str().expect("ASCII traceparent");
        let fields: Vec<&str> = tp.split('-').collect();
        assert_eq!(fields.len(), 4, "{tp}");
        assert_eq!(
            fields.iter().map(|f| f.len()).collect::<Vec<_>>(),
            [2, 32, 16, 2],
            "{tp}"
        );
        assert!(
            tp.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{tp}"
        );
    }
}
