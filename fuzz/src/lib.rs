//! Fuzz target functions: every parser of untrusted bytes, each with the property it must
//! keep. Called by the libFuzzer binaries in `fuzz_targets/` and, over the committed corpora,
//! by the workspace test `tests/fuzz_corpora.rs`.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Request, Response};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tower::{Layer, ServiceExt, service_fn};
use tracewire_amqp::carrier as amqp;
use tracewire_amqp::lapin::types::parsing::parse_field_table;
use tracewire_amqp::lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use tracewire_core::logs::JsonLayer;
use tracewire_core::messaging::ATTEMPT_HEADER;
use tracewire_core::propagation::MAX_VALUE_LEN;
use tracewire_core::w3c::W3cPropagator;
use tracewire_kafka::carrier as kafka;
use tracewire_kafka::rdkafka::message::{Header, Headers, OwnedHeaders};
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

/// A tracer provider and the propagator `tracewire::init()` installs by default (tracewire's
/// own W3C codec: `traceparent`, `tracestate`, `baggage`).
fn tracer_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        opentelemetry::global::set_tracer_provider(provider);
        opentelemetry::global::set_text_map_propagator(W3cPropagator::new());
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

/// The fields the W3C propagator owns: replaced when a message is forwarded.
const PROPAGATION: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// Reads fuzz bytes front to back; past the end every read is zeros or empty.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.take(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// A length-prefixed byte string; a set high bit repeats it past the propagation limits.
    fn bytes(&mut self) -> Vec<u8> {
        let len = self.byte();
        let bytes = self.take(usize::from(len & 0x7f)).to_vec();
        if len & 0x80 != 0 && !bytes.is_empty() {
            bytes.repeat(MAX_VALUE_LEN / bytes.len() + 1)
        } else {
            bytes
        }
    }
}

/// AMQP header names the structured decoder picks from, so the fuzzer reaches every header
/// tracewire reads without guessing the names.
const AMQP_KEYS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "baggage",
    ATTEMPT_HEADER,
    amqp::DELIVERY_COUNT_HEADER,
    amqp::X_DEATH_HEADER,
    "x-first-death-queue",
    "app",
];

/// Nesting depth beyond which arrays and tables are not built (the wire form has none).
const MAX_DEPTH: u8 = 8;

fn amqp_key(input: &mut Input<'_>) -> Option<ShortString> {
    let pick = input.byte();
    match AMQP_KEYS.get(usize::from(pick % 16)) {
        Some(key) => Some(ShortString::from(*key)),
        None => ShortString::try_new(String::from_utf8_lossy(&input.bytes())).ok(),
    }
}

fn amqp_table(input: &mut Input<'_>, depth: u8) -> FieldTable {
    let mut table = FieldTable::default();
    for _ in 0..input.byte() % 16 {
        if input.0.is_empty() {
            break;
        }
        if let Some(key) = amqp_key(input) {
            table.insert(key, amqp_value(input, depth));
        }
    }
    table
}

/// Every [`AMQPValue`] type, tables and arrays nested up to [`MAX_DEPTH`].
fn amqp_value(input: &mut Input<'_>, depth: u8) -> AMQPValue {
    let tag = input.byte();
    match tag % 19 {
        0 => AMQPValue::Boolean(tag & 0x80 != 0),
        1 => AMQPValue::ShortShortInt(i8::from_be_bytes(input.array())),
        2 => AMQPValue::ShortShortUInt(input.byte()),
        3 => AMQPValue::ShortInt(i16::from_be_bytes(input.array())),
        4 => AMQPValue::ShortUInt(u16::from_be_bytes(input.array())),
        5 => AMQPValue::LongInt(i32::from_be_bytes(input.array())),
        6 => AMQPValue::LongUInt(u32::from_be_bytes(input.array())),
        7 => AMQPValue::LongLongInt(i64::from_be_bytes(input.array())),
        8 => AMQPValue::Float(f32::from_be_bytes(input.array())),
        9 => AMQPValue::Double(f64::from_be_bytes(input.array())),
        10 => AMQPValue::DecimalValue(DecimalValue {
            scale: input.byte(),
            value: u32::from_be_bytes(input.array()),
        }),
        11 => AMQPValue::ShortString(
            ShortString::try_new(String::from_utf8_lossy(&input.bytes())).unwrap_or_default(),
        ),
        12 | 18 => AMQPValue::LongString(LongString::from(input.bytes())),
        13 if depth < MAX_DEPTH => {
            let values = (0..input.byte() % 8)
                .map(|_| amqp_value(input, depth + 1))
                .collect::<Vec<_>>();
            AMQPValue::FieldArray(FieldArray::from(values))
        }
        14 => AMQPValue::Timestamp(u64::from_be_bytes(input.array())),
        15 if depth < MAX_DEPTH => AMQPValue::FieldTable(amqp_table(input, depth + 1)),
        16 => AMQPValue::ByteArray(ByteArray::from(input.bytes().as_slice())),
        _ => AMQPValue::Void,
    }
}

/// The text a header value holds, where the AMQP extractor reads text.
fn amqp_text(value: &AMQPValue) -> Option<&str> {
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ByteArray(b) => std::str::from_utf8(b.as_slice()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A valid extracted span context came from this `traceparent` text.
fn assert_from(sc: &SpanContext, traceparent: Option<&str>) {
    let text = traceparent
        .unwrap_or_else(|| panic!("a valid context {sc:?} without a readable traceparent"))
        .to_ascii_lowercase();
    assert!(
        text.contains(&sc.trace_id().to_string()) && text.contains(&sc.span_id().to_string()),
        "{sc:?} is not in {text:?}"
    );
}

/// The `traceparent` a forwarded message must carry for `sc`.
fn traceparent_of(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// What survives a forward: span context, trace state and baggage. Baggage written out
/// percent-encoded can outgrow the 8 KiB limit when it came in near it (`%zz` becomes
/// `%25zz`): then whole entries are left out, never changed (`may_overflow`).
fn assert_same_context(
    forwarded: &opentelemetry::Context,
    original: &opentelemetry::Context,
    may_overflow: bool,
) {
    let (a, b) = (
        forwarded.span().span_context().clone(),
        original.span().span_context().clone(),
    );
    assert_eq!(a.trace_id(), b.trace_id());
    assert_eq!(a.span_id(), b.span_id());
    assert_eq!(a.trace_flags(), b.trace_flags());
    assert_eq!(a.trace_state().header(), b.trace_state().header());
    let baggage = |cx: &opentelemetry::Context| {
        let mut entries: Vec<(String, String)> = cx
            .baggage()
            .iter()
            .map(|(k, (v, _))| (k.to_string(), v.to_string()))
            .collect();
        entries.sort();
        entries
    };
    let (kept, had) = (baggage(forwarded), baggage(original));
    if may_overflow {
        assert!(kept.iter().all(|e| had.contains(e)), "{kept:?} ⊄ {had:?}");
    } else {
        assert_eq!(kept, had);
    }
}

/// Whether a baggage header this long can outgrow the limit once re-encoded.
fn may_overflow(baggage: Option<&str>) -> bool {
    baggage.is_some_and(|b| b.len() * 3 > tracewire_core::w3c::MAX_BAGGAGE_BYTES)
}

/// AMQP header tables (`FieldTable`): either the wire bytes a broker delivers, through
/// lapin's own parser (first byte even), or a table built from the bytes with every value
/// type, nested tables and arrays (first byte odd; a short string never comes off the wire).
/// Extraction, the attempt number and forwarding (inject into a copy) never panic; a valid
/// context comes only from a readable `traceparent`; forwarding keeps every other header as
/// it was and carries the same span context, trace state and baggage.
pub fn amqp_headers(data: &[u8]) {
    tracer_provider();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let table = if mode & 1 == 0 {
        match parse_field_table(rest) {
            Ok((_, table)) => table,
            Err(_) => return,
        }
    } else {
        amqp_table(&mut Input(rest), 0)
    };
    let cx = amqp::extract(Some(&table));
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        assert_from(&sc, table.inner().get("traceparent").and_then(amqp_text));
    }
    assert!(amqp::attempt(Some(&table)) >= 1);

    let mut forwarded = table.clone();
    amqp::inject(&cx, &mut forwarded);
    for (key, value) in table.inner() {
        if !PROPAGATION.contains(&key.as_str()) {
            // Compared as written out: a float NaN is not equal to itself.
            let kept = forwarded.inner().get(key).map(|v| format!("{v:?}"));
            assert_eq!(kept, Some(format!("{value:?}")), "{key:?}");
        }
    }
    for key in forwarded.inner().keys() {
        assert!(table.inner().contains_key(key) || PROPAGATION.contains(&key.as_str()));
    }
    if sc.is_valid() {
        assert_eq!(
            forwarded.inner().get("traceparent").and_then(amqp_text),
            Some(traceparent_of(&sc).as_str())
        );
    }
    let overflow = may_overflow(table.inner().get("baggage").and_then(amqp_text));
    assert_same_context(&amqp::extract(Some(&forwarded)), &cx, overflow);

    let mut stripped = table.clone();
    amqp::remove_propagation_fields(&mut stripped);
    assert!(PROPAGATION.iter().all(|f| !stripped.contains_key(f)));
    assert_eq!(
        stripped.inner().len(),
        table.inner().len() - PROPAGATION.iter().filter(|f| table.contains_key(f)).count()
    );
}

/// Kafka header names the target picks from.
const KAFKA_KEYS: [&str; 6] = [
    "traceparent",
    "tracestate",
    "baggage",
    ATTEMPT_HEADER,
    kafka::NOT_BEFORE_HEADER,
    "app",
];

/// A header value as the extractor reads it: text within the length limit, else absent.
fn readable(value: Option<Option<&[u8]>>) -> Option<&str> {
    value
        .flatten()
        .filter(|v| v.len() <= MAX_VALUE_LEN)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Kafka record headers: up to 64 headers (duplicates, null and oversized values, bytes that
/// are not UTF-8, more than the extractor's scan table holds), read through the same
/// librdkafka header list a consumed record has. Every lookup returns the last header of that
/// key when it is readable text, `keys()` lists each key once in order, a valid context comes
/// only from the last `traceparent`, and forwarding keeps every other header in order and
/// carries the same span context, trace state and baggage.
pub fn kafka_headers(data: &[u8]) {
    tracer_provider();
    let mut model: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut headers = OwnedHeaders::new();
    for chunk in data.split(|&b| b == 0xff).take(64) {
        let Some((&pick, rest)) = chunk.split_first() else {
            continue;
        };
        let (key, value) = match KAFKA_KEYS.get(usize::from(pick & 0x0f)) {
            Some(key) => (key.to_string(), rest),
            None => match rest.iter().position(|&b| b == b':') {
                Some(i) => (
                    String::from_utf8_lossy(&rest[..i]).into_owned(),
                    &rest[i + 1..],
                ),
                None => (String::new(), rest),
            },
        };
        let value = match pick >> 6 {
            0 | 1 => Some(value.to_vec()),
            2 if !value.is_empty() => Some(value.repeat(MAX_VALUE_LEN / value.len() + 1)),
            _ => None,
        };
        headers = headers.insert(Header {
            key: &key,
            value: value.as_deref(),
        });
        // librdkafka hands names back as C strings.
        let key = key.split('\0').next().unwrap_or_default().to_owned();
        model.push((key, value));
    }

    let last = |key: &str| {
        model
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    };
    let extractor = kafka::HeaderExtractor::new(&headers);
    let mut keys: Vec<&str> = Vec::new();
    for (key, _) in &model {
        if !keys.contains(&key.as_str()) {
            keys.push(key);
        }
    }
    {
        use opentelemetry::propagation::Extractor;
        assert_eq!(extractor.keys(), keys);
        for key in &keys {
            assert_eq!(extractor.get(key), readable(last(key)), "{key:?}");
        }
    }

    let cx = kafka::extract_context(Some(&headers));
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        assert_from(&sc, readable(last("traceparent")));
    }

    let forwarded = kafka::inject_headers(&cx, Some(&headers));
    let kept: Vec<(&str, Option<&[u8]>)> = model
        .iter()
        .filter(|(k, _)| !PROPAGATION.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    let out: Vec<(&str, Option<&[u8]>)> = forwarded.iter().map(|h| (h.key, h.value)).collect();
    assert_eq!(&out[..kept.len()], &kept[..]);
    assert!(
        out[kept.len()..]
            .iter()
            .all(|(k, _)| PROPAGATION.contains(k))
    );
    if sc.is_valid() {
        let tp = traceparent_of(&sc);
        assert!(out[kept.len()..].contains(&("traceparent", Some(tp.as_bytes()))));
    }
    let overflow = may_overflow(readable(last("baggage")));
    assert_same_context(&kafka::extract_context(Some(&forwarded)), &cx, overflow);
}
