//! Propagation formats besides W3C trace context, for services that talk to Zipkin- or
//! Jaeger-instrumented peers: [`B3Propagator`] (single `b3` header or `X-B3-*` headers) and
//! [`JaegerPropagator`] (`uber-trace-id`). Both implement OpenTelemetry's
//! [`TextMapPropagator`], so they compose with the others in a `TextMapCompositePropagator`
//! (`OTEL_PROPAGATORS=tracecontext,b3multi`).
//!
//! Extraction never fails: a header that does not parse (wrong length, not hex, all-zero id)
//! leaves the context as it was, so the receiver starts a fresh trace.
//!
//! ```
//! use opentelemetry::propagation::TextMapPropagator;
//! use opentelemetry::trace::TraceContextExt;
//! use std::collections::HashMap;
//! use tracewire_core::propagators::{B3Encoding, B3Propagator};
//!
//! let mut headers = HashMap::new();
//! headers.insert("x-b3-traceid".to_owned(), "4bf92f3577b34da6a3ce929d0e0e4736".to_owned());
//! headers.insert("x-b3-spanid".to_owned(), "00f067aa0ba902b7".to_owned());
//! headers.insert("x-b3-sampled".to_owned(), "1".to_owned());
//! let cx = B3Propagator::new(B3Encoding::MultipleHeaders).extract(&headers);
//! let span = cx.span();
//! assert_eq!(span.span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert!(span.span_context().is_sampled());
//! ```

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const B3_SINGLE: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";
const B3_PARENT: &str = "x-b3-parentspanid";
const UBER_TRACE_ID: &str = "uber-trace-id";

/// How [`B3Propagator`] writes context (it reads both forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Encoding {
    /// One `b3: {trace}-{span}-{sampled}` header (`OTEL_PROPAGATORS=b3`).
    SingleHeader,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` (`OTEL_PROPAGATORS=b3multi`).
    MultipleHeaders,
}

/// Zipkin's B3 propagation. Injects in the chosen [`B3Encoding`]; extracts the single header
/// first, then the multiple headers. 64-bit trace ids are widened to 128 bits with leading
/// zeros; the debug flag (`d`, `X-B3-Flags: 1`) counts as sampled.
#[derive(Debug, Clone)]
pub struct B3Propagator {
    encoding: B3Encoding,
    fields: Vec<String>,
}

impl B3Propagator {
    /// A B3 propagator writing `encoding`.
    pub fn new(encoding: B3Encoding) -> Self {
        let fields = match encoding {
            B3Encoding::SingleHeader => vec![B3_SINGLE.to_owned()],
            B3Encoding::MultipleHeaders => {
                [B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED, B3_FLAGS, B3_PARENT]
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect()
            }
        };
        Self { encoding, fields }
    }
}

fn trace_id(hex: &str) -> Option<TraceId> {
    if !(hex.len() == 16 || hex.len() == 32) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = TraceId::from_hex(hex).ok()?;
    (id != TraceId::INVALID).then_some(id)
}

fn span_id(hex: &str) -> Option<SpanId> {
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = SpanId::from_hex(hex).ok()?;
    (id != SpanId::INVALID).then_some(id)
}

fn remote(cx: &Context, trace: TraceId, span: SpanId, sampled: bool) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    cx.with_remote_span_context(SpanContext::new(
        trace,
        span,
        flags,
        true,
        TraceState::default(),
    ))
}

impl B3Propagator {
    fn extract_single(&self, value: &str) -> Option<(TraceId, SpanId, bool)> {
        let mut parts = value.trim().split('-');
        let trace = trace_id(parts.next()?)?;
        let span = span_id(parts.next()?)?;
        let sampled = match parts.next() {
            None => true,
            Some("1") | Some("d") => true,
            Some("0") => false,
            Some(_) => return None,
        };
        if let Some(parent) = parts.next() {
            span_id(parent)?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some((trace, span, sampled))
    }

    fn extract_multi(&self, extractor: &dyn Extractor) -> Option<(TraceId, SpanId, bool)> {
        let trace = trace_id(extractor.get(B3_TRACE_ID)?.trim())?;
        let span = span_id(extractor.get(B3_SPAN_ID)?.trim())?;
        let debug = extractor.get(B3_FLAGS).map(str::trim) == Some("1");
        let sampled = match extractor.get(B3_SAMPLED).map(str::trim) {
            None => true,
            Some("1") | Some("true") => true,
            Some("0") | Some("false") => debug,
            Some(_) => return None,
        };
        Some((trace, span, sampled || debug))
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let sampled = if sc.is_sampled() { "1" } else { "0" };
        match self.encoding {
            B3Encoding::SingleHeader => injector.set(
                B3_SINGLE,
                format!("{}-{}-{sampled}", sc.trace_id(), sc.span_id()),
            ),
            B3Encoding::MultipleHeaders => {
                injector.set(B3_TRACE_ID, sc.trace_id().to_string());
                injector.set(B3_SPAN_ID, sc.span_id().to_string());
                injector.set(B3_SAMPLED, sampled.to_owned());
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let found = match extractor.get(B3_SINGLE) {
            Some(single) => self.extract_single(single),
            None => self.extract_multi(extractor),
        };
        match found {
            Some((trace, span, sampled)) => remote(cx, trace, span, sampled),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

/// Jaeger's `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}` propagation
/// (`OTEL_PROPAGATORS=jaeger`). Ids shorter than their full width are zero-padded, a
/// URL-encoded value (`%3A`) is accepted, flag bit 1 is "sampled" and bit 2 "debug" (counted
/// as sampled). `uberctx-*` baggage is not read.
#[derive(Debug, Clone)]
pub struct JaegerPropagator {
    fields: Vec<String>,
}

impl JaegerPropagator {
    /// The Jaeger propagator.
    pub fn new() -> Self {
        Self {
            fields: vec![UBER_TRACE_ID.to_owned()],
        }
    }
}

impl Default for JaegerPropagator {
    fn default() -> Self {
        Self::new()
    }
}

fn padded<const N: usize>(hex: &str) -> Option<String> {
    if hex.is_empty() || hex.len() > N || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{hex:0>N$}"))
}

fn parse_uber(value: &str) -> Option<(TraceId, SpanId, bool)> {
    let decoded;
    let value = if value.contains('%') {
        decoded = value.replace("%3A", ":").replace("%3a", ":");
        decoded.as_str()
    } else {
        value
    };
    let mut parts = value.trim().split(':');
    let trace = trace_id(&padded::<32>(parts.next()?)?)?;
    let span = span_id(&padded::<16>(parts.next()?)?)?;
    let _parent = parts.next()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((trace, span, flags & 0x03 != 0))
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let flags = if sc.is_sampled() { 1 } else { 0 };
        injector.set(
            UBER_TRACE_ID,
            format!("{}:{}:0:{flags}", sc.trace_id(), sc.span_id()),
        );
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get(UBER_TRACE_ID).and_then(parse_uber) {
            Some((trace, span, sampled)) => remote(cx, trace, span, sampled),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ids(cx: &Context) -> Option<(String, String, bool)> {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            (
                sc.trace_id().to_string(),
                sc.span_id().to_string(),
                sc.is_sampled(),
            )
        })
    }

    fn expect(trace: &str, span: &str, sampled: bool) -> Option<(String, String, bool)> {
        Some((trace.to_owned(), span.to_owned(), sampled))
    }

    #[test]
    fn b3_multi_extracts_and_injects() {
        let p = B3Propagator::new(B3Encoding::MultipleHeaders);
        let cx = p.extract(&carrier(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, true));
        assert!(cx.span().span_context().is_remote());
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(out["x-b3-traceid"], TRACE);
        assert_eq!(out["x-b3-spanid"], SPAN);
        assert_eq!(out["x-b3-sampled"], "1");
        assert!(!out.contains_key("b3"));
        // Not sampled, then the debug flag overriding it, then a 64-bit trace id.
        let cx = p.extract(&carrier(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, false));
        let cx = p.extract(&carrier(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, true));
        let cx = p.extract(&carrier(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", SPAN),
        ]));
        assert_eq!(
            ids(&cx),
            expect("0000000000000000a3ce929d0e0e4736", SPAN, true)
        );
    }

    #[test]
    fn b3_single_extracts_and_injects() {
        let p = B3Propagator::new(B3Encoding::SingleHeader);
        let value = format!("{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90");
        let cx = p.extract(&carrier(&[("b3", &value)]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, true));
        let cx = p.extract(&carrier(&[("b3", &format!("{TRACE}-{SPAN}-d"))]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, true));
        let cx = p.extract(&carrier(&[("b3", &format!("{TRACE}-{SPAN}-0"))]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, false));
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(out["b3"], format!("{TRACE}-{SPAN}-0"));
        // The single-header propagator reads the multiple headers too.
        let cx = p.extract(&carrier(&[("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, true));
    }

    #[test]
    fn b3_malformed_is_ignored() {
        let p = B3Propagator::new(B3Encoding::MultipleHeaders);
        for bad in [
            vec![("b3", "0")],
            vec![("b3", "xyz")],
            vec![("b3", &*format!("{TRACE}-{SPAN}-2"))],
            vec![("b3", &*format!("{TRACE}-{SPAN}-1-{SPAN}-extra"))],
            vec![
                ("x-b3-traceid", "00000000000000000000000000000000"),
                ("x-b3-spanid", SPAN),
            ],
            vec![("x-b3-traceid", TRACE), ("x-b3-spanid", "0000000000000000")],
            vec![
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e473"),
                ("x-b3-spanid", SPAN),
            ],
            vec![("x-b3-traceid", TRACE), ("x-b3-spanid", "zzf067aa0ba902b7")],
            vec![("x-b3-traceid", TRACE)],
            vec![
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "yes"),
            ],
        ] {
            let cx = p.extract(&carrier(&bad));
            assert_eq!(ids(&cx), None, "{bad:?}");
        }
    }

    #[test]
    fn jaeger_extracts_and_injects() {
        let p = JaegerPropagator::new();
        let cx = p.extract(&carrier(&[(
            "uber-trace-id",
            &format!("{TRACE}:{SPAN}:0:1"),
        )]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, true));
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(out["uber-trace-id"], format!("{TRACE}:{SPAN}:0:1"));
        // Short ids, URL-encoded separators, debug flag, unsampled.
        let cx = p.extract(&carrier(&[("uber-trace-id", "abc%3Adef%3A0%3A2")]));
        assert_eq!(
            ids(&cx),
            expect("00000000000000000000000000000abc", "0000000000000def", true)
        );
        let cx = p.extract(&carrier(&[(
            "uber-trace-id",
            &format!("{TRACE}:{SPAN}:0:0"),
        )]));
        assert_eq!(ids(&cx), expect(TRACE, SPAN, false));
        for bad in [
            "",
            "a:b:c",
            "x:1:0:1",
            "1:1:0:zz",
            "1:1:0:1:1",
            "0:1:0:1",
            &format!("{TRACE}0:{SPAN}:0:1"),
        ] {
            let cx = p.extract(&carrier(&[("uber-trace-id", bad)]));
            assert_eq!(ids(&cx), None, "{bad}");
        }
    }

    #[test]
    fn nothing_injected_without_a_valid_span() {
        let mut out: HashMap<String, String> = HashMap::new();
        B3Propagator::new(B3Encoding::SingleHeader).inject_context(&Context::new(), &mut out);
        JaegerPropagator::new().inject_context(&Context::new(), &mut out);
        assert!(out.is_empty());
    }
}
