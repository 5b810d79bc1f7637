//! How one server request ends: its [`Operation`], what the response adds to it, and the
//! request's measure (duration histogram, in-flight count, access-log line).

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response};
use opentelemetry::propagation::Injector;
use opentelemetry::{Context, KeyValue};
use tracewire_core::RequestId;
use tracewire_core::attributes as attr;
use tracewire_core::operation::{EndKind, Ended, Failure, Measure, Operation};

use super::telemetry::{DurationKey, Durations, Shared, scheme};
use crate::classify::{Ending, GrpcCall, GrpcCode, Side};

/// The measure of one request: `http.server.request.duration`, the in-flight count and the
/// access-log line, all written once when the request's operation ends.
pub(crate) struct RequestMeasure {
    pub(crate) shared: Arc<Shared>,
    pub(crate) method: &'static str,
    pub(crate) method_idx: usize,
    pub(crate) https: bool,
    pub(crate) route: Option<Cow<'static, str>>,
    /// The route's (or the unrouted method's) duration histogram, bound per attribute set;
    /// `None` past the route cache's limit.
    pub(crate) durations: RouteDurations,
    /// The path for the access-log line; `None` when no access-log event would be written.
    pub(crate) path: Option<Box<str>>,
    pub(crate) status: Option<u16>,
    /// Set when the call is recorded as gRPC: judged by `grpc-status`, measured in
    /// `rpc.server.call.duration`.
    pub(crate) grpc: Option<GrpcCall>,
    /// The metric attributes of a gRPC call, written when it settles.
    pub(crate) grpc_attributes: Vec<KeyValue>,
}

/// Where a request's `http.server.request.duration` goes.
#[derive(Clone, Copy)]
pub(crate) enum RouteDurations {
    /// The route's bound histograms.
    Route(&'static Durations),
    /// The histograms of requests without a matched route, for the request's method.
    Unrouted,
    /// Recorded unbound (past the route cache's limit, or a gRPC call).
    Unbound,
}

impl RequestMeasure {
    fn record_grpc(&mut self, ended: &Ended<'_>) {
        let mut attributes = std::mem::take(&mut self.grpc_attributes);
        if attributes.is_empty() {
            // Ended without settling (a panic): what is known.
            attributes.push(KeyValue::new(attr::RPC_SYSTEM, "grpc"));
            attributes.push(KeyValue::new(attr::RPC_SYSTEM_NAME, "grpc"));
        }
        if let Some(error) = ended.error_type {
            attributes.push(KeyValue::new(attr::ERROR_TYPE, error.to_owned()));
        }
        self.shared
            .instruments
            .rpc_duration
            .record(ended.elapsed.as_secs_f64(), &attributes);
        self.shared
            .instruments
            .active
            .end(self.method_idx, self.https);
    }
}

impl Measure for RequestMeasure {
    fn record(&mut self, ended: &Ended<'_>) {
        let grpc_status = self
            .grpc
            .as_ref()
            .and_then(GrpcCall::code)
            .map(GrpcCode::as_str);
        if self.grpc.is_some() {
            self.record_grpc(ended);
        } else {
            self.record_http(ended);
        }
        self.log_access(ended, grpc_status);
    }
}

impl RequestMeasure {
    /// The metric attributes of an HTTP request, built only when its attribute set is first
    /// bound (or when it cannot be bound).
    fn http_attributes(&self, error_type: Option<&str>) -> (DurationKey, Vec<KeyValue>) {
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method));
        attributes.push(KeyValue::new(attr::URL_SCHEME, scheme(self.https)));
        if let Some(route) = &self.route {
            attributes.push(KeyValue::new(attr::HTTP_ROUTE, route.clone()));
        }
        if let Some(status) = self.status {
            attributes.push(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        if let Some(error) = error_type {
            attributes.push(KeyValue::new(attr::ERROR_TYPE, error.to_owned()));
        }
        let key = DurationKey {
            https: self.https,
            status: self.status,
            error_type: error_type.map(Box::from),
        };
        (key, attributes)
    }

    fn record_http(&mut self, ended: &Ended<'_>) {
        let seconds = ended.elapsed.as_secs_f64();
        let (https, status, error_type) = (self.https, self.status, ended.error_type);
        match self.durations {
            // Through the thread's buffer: every worker records into the same few sets.
            RouteDurations::Route(durations) => durations.record_deferred(
                seconds,
                |key| key.is(https, status, error_type),
                || self.http_attributes(error_type),
            ),
            RouteDurations::Unrouted => self.shared.instruments.unrouted[self.method_idx].record(
                seconds,
                |key| key.is(https, status, error_type),
                || self.http_attributes(error_type),
            ),
            RouteDurations::Unbound => {
                let (_, attributes) = self.http_attributes(error_type);
                self.shared
                    .instruments
                    .duration
                    .record(seconds, &attributes);
            }
        }
        self.shared
            .instruments
            .active
            .end(self.method_idx, self.https);
    }

    /// The access-log event of the request (target `tracewire::access`).
    fn log_access(&self, ended: &Ended<'_>, grpc_status: Option<&'static str>) {
        let Some(path) = self.path.as_deref() else {
            return;
        };
        if self.shared.config.quiet_paths.iter().any(|p| &**p == path) {
            return;
        }
        let _attached = ended.context.clone().attach();
        let duration_ms = ended.elapsed.as_secs_f64() * 1000.0;
        let route = self.route.as_deref();
        if ended.kind == EndKind::Ok {
            tracing::info!(
                target: "tracewire::access",
                method = self.method,
                route,
                path,
                status = self.status,
                grpc_status,
                duration_ms,
                "request completed"
            );
        } else {
            // A 5xx, an error of the inner service, a body that failed or a handler that
            // panicked mid-stream (even after a 2xx head), or a request dropped unanswered.
            tracing::warn!(
                target: "tracewire::access",
                method = self.method,
                route,
                path,
                status = self.status,
                grpc_status,
                duration_ms,
                error = ended.error_type,
                "request failed"
            );
        }
    }
}

/// One request in flight: its operation and the request id to answer with.
pub(crate) struct Exchange {
    /// Taken when the request ends.
    pub(crate) op: Option<Operation<RequestMeasure>>,
    /// The operation's context (also inside `op`), kept at hand for every poll.
    pub(crate) cx: Context,
    pub(crate) request_id: RequestId,
    /// The configured propagator was tracewire's when the request came in: the response
    /// `traceparent` is written by the codec directly.
    w3c: bool,
}

/// Passes only `traceparent` through: responses must not echo baggage or trace state.
struct TraceparentOnly<'a>(crate::propagation::HeaderInjector<'a>);

impl Injector for TraceparentOnly<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(tracewire_core::propagation::TRACEPARENT) {
            self.0.set(key, value);
        }
    }
}

impl tracewire_core::w3c::TextSink for TraceparentOnly<'_> {
    fn set_text(&mut self, name: &'static str, value: &str) {
        if name == tracewire_core::w3c::TRACEPARENT {
            self.0.set_text(name, value);
        }
    }
}

impl Exchange {
    pub(crate) fn new(
        op: Operation<RequestMeasure>,
        cx: Context,
        request_id: RequestId,
        w3c: bool,
    ) -> Self {
        Self {
            op: Some(op),
            cx,
            request_id,
            w3c,
        }
    }

    /// The request's context (its span current).
    pub(crate) fn context(&self) -> &Context {
        &self.cx
    }

    /// Records the response head: status code, classification, response headers.
    pub(crate) fn on_response<B>(&mut self, response: &mut Response<B>) {
        let Some(op) = self.op.as_mut() else { return };
        let status = response.status();
        op.measure_mut().status = Some(status.as_u16());
        op.set_attribute(KeyValue::new(
            attr::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status.as_u16()),
        ));
        let measure = op.measure_mut();
        let failure = match measure.grpc.as_mut() {
            Some(call) => {
                // gRPC: judged by `grpc-status` when the call ends.
                call.on_response_head(status, response.headers());
                None
            }
            None => measure
                .shared
                .config
                .classifier
                .http_failure(status, Side::Server),
        };
        let request_id_header = measure.shared.config.request_id_header.clone();
        if let Some(failure) = failure {
            op.fail(failure);
        }
        let headers = response.headers_mut();
        if self.w3c {
            // What the codec would write as `traceparent`, without a trip through the
            // global propagator.
            crate::propagation::insert_traceparent(&self.cx, headers);
        } else {
            tracewire_core::propagation::inject_text(
                &self.cx,
                &mut TraceparentOnly(crate::propagation::HeaderInjector(headers)),
            );
        }
        if let Ok(value) = HeaderValue::from_bytes(self.request_id.as_bytes()) {
            headers.insert(request_id_header, value);
        }
    }

    /// Records the trailers at the end of the body.
    pub(crate) fn on_trailers(&mut self, trailers: &HeaderMap) {
        let Some(op) = self.op.as_mut() else { return };
        if let Some(call) = op.measure_mut().grpc.as_mut() {
            call.on_trailers(trailers);
        }
    }

    /// Records a failure of the inner service or of the body.
    pub(crate) fn fail(&mut self, failure: Failure) {
        if let Some(op) = self.op.as_mut() {
            op.fail(failure);
        }
    }

    /// Ends the request.
    pub(crate) fn end(mut self) {
        if let Some(op) = self.op.take() {
            settle(op, &self.cx, Ending::Complete);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some(mut op) = self.op.take() else { return };
        // A server may drop a body it has sent without polling it to its end (a HEAD request,
        // a 204, a body whose size hint said it was complete): once the head went out, that is
        // a completed request. Before the head, or while panicking, the operation's own drop
        // records a cancellation or a panic.
        if std::thread::panicking() {
            return;
        }
        if op.measure_mut().grpc.is_some() {
            // The client cancelled the call (or went away): `CANCELLED`, unless the response
            // head already carried a status.
            settle(op, &self.cx, Ending::Dropped);
        } else if op.measure_mut().status.is_some() {
            op.end();
        }
    }
}

/// Ends a request's operation; a gRPC call first takes its status, names and failure from
/// what the response brought.
fn settle(mut op: Operation<RequestMeasure>, cx: &Context, ending: Ending) {
    let layer_failed = op.failure().is_some();
    let measure = op.measure_mut();
    if let Some(call) = measure.grpc.as_mut() {
        let ending = if layer_failed { Ending::Failed } else { ending };
        let classifier = measure.shared.config.classifier.clone();
        let mut attributes = Vec::with_capacity(7);
        let span = opentelemetry::trace::TraceContextExt::span(cx);
        let failure = call.end(&*classifier.0, ending, layer_failed, &span, &mut attributes);
        measure.grpc_attributes = attributes;
        if let Some(failure) = failure {
            op.fail(failure);
        }
    }
    op.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn the_direct_response_traceparent_is_the_one_the_propagator_writes() {
        opentelemetry::global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new());
        let span_context = |flags| {
            SpanContext::new(
                TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
                SpanId::from(0x00f0_67aa_0ba9_02b7),
                flags,
                false,
                TraceState::from_key_value([("vendor", "abc")]).unwrap(),
            )
        };
        let contexts = [
            Context::new(),
            Context::new().with_remote_span_context(span_context(TraceFlags::SAMPLED)),
            Context::new().with_remote_span_context(span_context(TraceFlags::NOT_SAMPLED)),
            Context::new()
                .with_remote_span_context(span_context(TraceFlags::SAMPLED))
                .with_baggage([KeyValue::new("tenant", "acme")]),
            Context::new().with_remote_span_context(SpanContext::empty_context()),
        ];
        for cx in &contexts {
            let start = || {
                let mut headers = HeaderMap::new();
                headers.append("traceparent", HeaderValue::from_static("stale-1"));
                headers.append("traceparent", HeaderValue::from_static("stale-2"));
                headers.append("content-type", HeaderValue::from_static("text/plain"));
                headers
            };
            let mut generic = start();
            tracewire_core::propagation::inject_text(
                cx,
                &mut TraceparentOnly(crate::propagation::HeaderInjector(&mut generic)),
            );
            let mut direct = start();
            crate::propagation::insert_traceparent(cx, &mut direct);
            assert_eq!(direct, generic);
            assert!(direct.get("tracestate").is_none() && direct.get("baggage").is_none());
        }
    }
}
