//! One physical request attempt: its CLIENT span, its metric attributes, and how it ends.
//!
//! Shared by the tower [`Client`](super::Client) service and the `reqwest-middleware` adapter.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub(crate) use crate::semconv::method_name;
use crate::semconv::protocol_version;
use http::{HeaderMap, Method, StatusCode, Version};
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::Histogram;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::metric::{
    HTTP_CLIENT_REQUEST_DURATION, RPC_CLIENT_CALL_DURATION,
};
use tracewire_core::attributes::{
    HTTP_REQUEST_METHOD, HTTP_REQUEST_METHOD_ORIGINAL, HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE, NETWORK_PROTOCOL_VERSION, SERVER_ADDRESS, SERVER_PORT, URL_FULL,
};
use tracewire_core::operation::{Failure, Operation, Timed};

use crate::classify::{Ending, GrpcCall, SharedClassifier, Side};

/// The tracer and the instruments of a client layer, built once when the layer is built.
#[derive(Clone)]
pub(crate) struct Instruments {
    tracer: Arc<BoxedTracer>,
    duration: Histogram<f64>,
    rpc_duration: Histogram<f64>,
    pub(crate) classifier: SharedClassifier,
}

impl fmt::Debug for Instruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instruments").finish_non_exhaustive()
    }
}

impl Instruments {
    /// Takes the tracer and the meter from the global providers, now.
    pub(crate) fn from_globals() -> Self {
        let meter = tracewire_core::metrics::meter();
        Self {
            tracer: Arc::new(tracewire_core::tracer()),
            duration: tracewire_core::metrics::duration_histogram(
                &meter,
                HTTP_CLIENT_REQUEST_DURATION,
                "Duration of HTTP client requests.",
            ),
            rpc_duration: tracewire_core::metrics::duration_histogram(
                &meter,
                RPC_CLIENT_CALL_DURATION,
                "Duration of outgoing RPCs.",
            ),
            classifier: SharedClassifier::default(),
        }
    }
}

/// The request data an attempt records, borrowed from whatever request type the client uses.
pub(crate) struct Target<'a> {
    pub(crate) method: &'a Method,
    pub(crate) host: Option<&'a str>,
    /// The explicit port, or the scheme's default.
    pub(crate) port: Option<u16>,
    /// The absolute URL, not yet redacted.
    pub(crate) url: Option<Cow<'a, str>>,
}

impl<'a> Target<'a> {
    /// Reads the target of an `http::Request`: from its URI when absolute, else from the
    /// `Host` header (origin-form requests, as tonic sends them).
    pub(crate) fn from_parts(
        method: &'a Method,
        uri: &'a http::Uri,
        headers: &'a HeaderMap,
    ) -> Self {
        let scheme = uri.scheme_str();
        let (host, explicit_port) = match uri.host() {
            Some(host) => (Some(host), uri.port_u16()),
            None => match headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(authority) => split_authority(authority),
                None => (None, None),
            },
        };
        let port = explicit_port.or_else(|| scheme.and_then(default_port));
        let url = (scheme.is_some() && uri.host().is_some()).then(|| Cow::Owned(uri.to_string()));
        Target {
            method,
            host,
            port,
            url,
        }
    }
}

fn split_authority(authority: &str) -> (Option<&str>, Option<u16>) {
    // `[v6]:port`, `host:port` or a bare host; a port that does not parse is dropped.
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (
                Some(host),
                tail.strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (None, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (Some(host), port.parse().ok()),
        None => (Some(authority), None),
    }
}

pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// The `error.type` of a transport error of type `E`: its type name, or `_OTHER` for a boxed
/// trait object (whose name says nothing).
pub(crate) fn error_type_of<E>() -> &'static str {
    let name = std::any::type_name::<E>();
    if name.starts_with("alloc::boxed::Box<dyn ") {
        "_OTHER"
    } else {
        name
    }
}

/// An attempt in flight: its [`Operation`]. It ends exactly once, whichever of response
/// error, body end, body error or drop comes first; dropped after the response head, it ends
/// as completed (the caller stopped reading), before it as cancelled.
pub(crate) struct Attempt {
    cx: Context,
    op: Option<Operation<Timed>>,
    classifier: SharedClassifier,
    answered: bool,
    /// Set when the call is recorded as gRPC: judged by `grpc-status`, measured in
    /// `rpc.client.call.duration`.
    grpc: Option<GrpcCall>,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("span_context", self.cx.span().span_context())
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

impl Attempt {
    /// Starts the CLIENT span of one attempt as a child of `parent`.
    #[cfg(any(feature = "reqwest", test))]
    pub(crate) fn start(
        instruments: &Instruments,
        parent: &Context,
        target: Target<'_>,
        resend_count: u32,
    ) -> Self {
        Self::start_call(instruments, parent, target, resend_count, None)
    }

    /// Starts the CLIENT span of one attempt, recorded as a gRPC call when `grpc` is given.
    pub(crate) fn start_call(
        instruments: &Instruments,
        parent: &Context,
        target: Target<'_>,
        resend_count: u32,
        grpc: Option<GrpcCall>,
    ) -> Self {
        let known = method_name(target.method);
        let method = known.unwrap_or("_OTHER");
        // An IPv6 literal is recorded without its brackets.
        let host: Option<Arc<str>> = target.host.map(|h| {
            Arc::from(
                h.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h),
            )
        });

        let mut span_attributes = Vec::with_capacity(8);
        let mut metric_attributes = Vec::with_capacity(6);
        span_attributes.push(KeyValue::new(HTTP_REQUEST_METHOD, method));
        if grpc.is_none() {
            metric_attributes.push(KeyValue::new(HTTP_REQUEST_METHOD, method));
        }
        if known.is_none() {
            span_attributes.push(KeyValue::new(
                HTTP_REQUEST_METHOD_ORIGINAL,
                target.method.as_str().to_owned(),
            ));
        }
        if let Some(host) = &host {
            span_attributes.push(KeyValue::new(SERVER_ADDRESS, host.clone()));
            metric_attributes.push(KeyValue::new(SERVER_ADDRESS, host.clone()));
        }
        if let Some(port) = target.port {
            span_attributes.push(KeyValue::new(SERVER_PORT, i64::from(port)));
            metric_attributes.push(KeyValue::new(SERVER_PORT, i64::from(port)));
        }
        if let Some(url) = target.url {
            // Reuse the URL's own allocation when there is nothing to redact.
            let redacted = match tracewire_core::redact::redact_url(&url) {
                Cow::Owned(r) => Some(r),
                Cow::Borrowed(_) => None,
            };
            span_attributes.push(KeyValue::new(
                URL_FULL,
                redacted.unwrap_or_else(|| url.into_owned()),
            ));
        }
        if resend_count > 0 {
            span_attributes.push(KeyValue::new(
                HTTP_REQUEST_RESEND_COUNT,
                i64::from(resend_count),
            ));
        }

        let name = match &grpc {
            Some(call) => {
                call.start_attributes(&mut span_attributes);
                call.span_name()
            }
            None => Cow::Borrowed(known.unwrap_or("HTTP")),
        };
        let duration = match &grpc {
            Some(_) => &instruments.rpc_duration,
            None => &instruments.duration,
        };
        let builder = instruments
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(span_attributes);
        let span = instruments.tracer.build_with_context(builder, parent);
        let cx = tracewire_core::provider::context_with_span(parent, span);
        let op = Operation::new(cx.clone(), Timed::new(duration.clone(), metric_attributes));
        Attempt {
            cx,
            op: Some(op),
            classifier: instruments.classifier.clone(),
            answered: false,
            grpc,
        }
    }

    /// The context of this attempt (its span as the current span), to inject and to attach.
    pub(crate) fn context(&self) -> &Context {
        &self.cx
    }

    /// Records the response head.
    pub(crate) fn on_response(
        &mut self,
        status: StatusCode,
        version: Version,
        headers: &HeaderMap,
    ) {
        self.answered = true;
        let Some(op) = self.op.as_mut() else { return };
        let code = i64::from(status.as_u16());
        op.set_attribute(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, code));
        if let Some(call) = &mut self.grpc {
            // Judged by `grpc-status` when the call ends.
            if let Some(v) = protocol_version(version) {
                op.set_attribute(KeyValue::new(NETWORK_PROTOCOL_VERSION, v));
            }
            call.on_response_head(status, headers);
            return;
        }
        op.measure_mut()
            .push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, code));
        if let Some(v) = protocol_version(version) {
            op.set_attribute(KeyValue::new(NETWORK_PROTOCOL_VERSION, v));
            op.measure_mut()
                .push(KeyValue::new(NETWORK_PROTOCOL_VERSION, v));
        }
        if let Some(failure) = self.classifier.http_failure(status, Side::Client) {
            op.fail(failure);
        }
    }

    /// Records the trailers at the end of the response body.
    pub(crate) fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(call) = &mut self.grpc {
            call.on_trailers(trailers);
        }
    }

    /// Records a failure (no response, or a failed response body) and ends the attempt.
    pub(crate) fn fail(mut self, error_type: &'static str, message: &dyn fmt::Display) {
        if let Some(mut op) = self.op.take() {
            op.fail(Failure::exception(error_type, message.to_string()));
            self.settle(op, Ending::Failed);
        }
    }

    /// Ends the attempt (the body was read to its end).
    pub(crate) fn end(mut self) {
        if let Some(op) = self.op.take() {
            self.settle(op, Ending::Complete);
        }
    }

    /// Ends the operation; a gRPC call first takes its status, names and failure from what
    /// the response brought.
    fn settle(&mut self, mut op: Operation<Timed>, ending: Ending) {
        if let Some(call) = &mut self.grpc {
            let layer_failed = op.failure().is_some();
            let mut attributes = Vec::with_capacity(7);
            let span = self.cx.span();
            let failure = call.end(
                &*self.classifier.0,
                ending,
                layer_failed,
                &span,
                &mut attributes,
            );
            for attribute in attributes {
                op.measure_mut().push(attribute);
            }
            if let Some(failure) = failure {
                op.fail(failure);
            }
        }
        op.end();
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some(op) = self.op.take() {
            if self.grpc.is_some() {
                // Dropped before its end: `CANCELLED`, unless a status already arrived.
                self.settle(op, Ending::Dropped);
            } else if self.answered {
                op.end();
            } else {
                drop(op);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let headers = HeaderMap::new();
        let uri: http::Uri = "https://u:p@api.example.com/a?k=v".parse().unwrap();
        let t = Target::from_parts(&Method::GET, &uri, &headers);
        assert_eq!(t.host, Some("api.example.com"));
        assert_eq!(t.port, Some(443));
        assert_eq!(t.url.as_deref(), Some("https://u:p@api.example.com/a?k=v"));

        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "[::1]:8080".parse().unwrap());
        let uri: http::Uri = "/pkg.Svc/Call".parse().unwrap();
        let t = Target::from_parts(&Method::POST, &uri, &headers);
        assert_eq!((t.host, t.port), (Some("::1"), Some(8080)));
        assert!(t.url.is_none());

        assert_eq!(split_authority("h:x"), (Some("h"), None));
        assert_eq!(split_authority("h"), (Some("h"), None));
        assert_eq!(split_authority("[::1"), (None, None));
    }

    #[test]
    fn ipv6_addresses_lose_their_brackets() {
        use tracewire_test::SpanDataExt;
        let capture = tracewire_test::Capture::install();
        let uri: http::Uri = "http://[::1]:8080/x".parse().unwrap();
        let headers = HeaderMap::new();
        let target = Target::from_parts(&Method::GET, &uri, &headers);
        drop(Attempt::start(
            &Instruments::from_globals(),
            &Context::new(),
            target,
            0,
        ));
        let span = capture.span("GET");
        assert_eq!(span.attr_str(SERVER_ADDRESS).as_deref(), Some("::1"));
        assert_eq!(span.attr_str(SERVER_PORT).as_deref(), Some("8080"));
        assert_eq!(
            span.attr_str(URL_FULL).as_deref(),
            Some("http://[::1]:8080/x")
        );
    }

    #[test]
    fn methods_and_errors() {
        assert_eq!(method_name(&Method::PATCH), Some("PATCH"));
        assert_eq!(method_name(&Method::from_bytes(b"PURGE").unwrap()), None);
        assert_eq!(error_type_of::<std::io::Error>(), "std::io::error::Error");
        assert_eq!(
            error_type_of::<Box<dyn std::error::Error + Send + Sync>>(),
            "_OTHER"
        );
    }
}
