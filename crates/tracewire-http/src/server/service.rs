use std::borrow::Cow;
use std::fmt;
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use http::{HeaderMap, Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Tracer as _};
use tower::Service;
use tracewire_core::RequestId;
use tracewire_core::attributes as attr;
use tracewire_core::redact::redact_query;

use std::sync::Arc;

use tracewire_core::operation::Operation;

use super::body::ServerBody;
use super::finish::{Exchange, RequestMeasure, RouteDurations};
use super::future::ResponseFuture;
use super::telemetry::{Config, Shared, scheme, thread_copy};
use crate::classify::{GrpcCall, Protocol, Side};
use crate::semconv::{OTHER_METHOD, method_index, method_value, protocol_version};

/// The service produced by [`ServerLayer`](super::ServerLayer): instruments every request
/// to `S`.
#[derive(Debug)]
pub struct Server<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Server<S> {
    /// A clone for the calling thread: it holds the thread's copy of the layer's shared state,
    /// so the reference count a request takes and drops is not one every worker writes.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: thread_copy(&self.shared),
        }
    }
}

impl<S> Server<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Server<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: fmt::Display + 'static,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The one clock reading at the start: the span's start time and the duration's.
        let start = SystemTime::now();
        let shared = &*self.shared.instruments;
        let config = &self.shared.config;

        // One look at the configured propagator per request: with tracewire's own, the codec
        // reads and writes the W3C headers directly.
        let w3c = tracewire_core::propagation::global_is_w3c();
        let parent = crate::propagation::extract_with(req.headers(), w3c);

        let method_idx = method_index(req.method());
        let method = method_value(method_idx);
        let https = match req.uri().scheme_str() {
            Some(scheme) => scheme == "https",
            None => config.https,
        };
        let scheme = scheme(https);
        let grpc = match config
            .classifier
            .protocol(req.method(), req.uri(), req.headers())
        {
            Protocol::Grpc => Some(GrpcCall::start(req.uri().path(), Side::Server)),
            Protocol::Http => None,
        };
        let (route, span_name, durations) = match (&grpc, matched_route(&req)) {
            (Some(call), _) => (None, call.span_name(), RouteDurations::Unbound),
            (None, Some(route)) => {
                let named = shared.names.get(method_idx, method, route);
                let durations = named
                    .durations
                    .map_or(RouteDurations::Unbound, RouteDurations::Route);
                (Some(named.route), named.span_name, durations)
            }
            (None, None) => (None, Cow::Borrowed(method), RouteDurations::Unrouted),
        };

        let request_id = request_id(req.headers(), &config.request_id_header);
        let cx = match shared.tracer.dropped_child(&parent) {
            // A parent-based sampler drops this span whatever it carries: its context is
            // built without an SDK span, and without the attributes only the sampler and a
            // recording span would read.
            Some(child) => child,
            None => {
                // Known to record (a parent-based sampler under a sampled parent): every
                // attribute goes in with the builder, in one vector of the right size.
                let recorded = tracewire_core::provider::parent_decision(&parent) == Some(true);
                // Sized for every attribute a recorded request span gets, those set late and
                // at the response included: the vector becomes the span's, and growing it
                // there would copy it twice (its memory is freed on the export thread, where
                // every extra allocation costs more).
                let mut attributes = Vec::with_capacity(SPAN_ATTRIBUTES);
                attributes.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, method));
                attributes.push(KeyValue::new(attr::URL_SCHEME, scheme));
                if let Some(route) = &route {
                    attributes.push(KeyValue::new(attr::HTTP_ROUTE, route.clone()));
                }
                if let Some(call) = &grpc {
                    call.start_attributes(&mut attributes);
                }
                if recorded {
                    request_attributes(&req, config, method_idx, &request_id, &mut attributes);
                }
                let builder = shared
                    .tracer
                    .span_builder(span_name)
                    .with_kind(SpanKind::Server)
                    .with_start_time(start)
                    .with_attributes(attributes);
                // A span that records without its parent having said so gets the rest late.
                let (cx, _) = shared.tracer.start_in_context(builder, &parent, || {
                    let mut late = Vec::with_capacity(if recorded { 0 } else { 12 });
                    if !recorded {
                        request_attributes(&req, config, method_idx, &request_id, &mut late);
                    }
                    late
                });
                cx
            }
        };
        let cx = cx.with_value(request_id.clone());
        req.extensions_mut().insert(request_id.clone());

        shared.active.start(method_idx, https);
        // The path is kept only for an access-log line that some subscriber would write.
        let path = (config.access_log
            && tracing::enabled!(target: "tracewire::access", tracing::Level::WARN))
        .then(|| Box::<str>::from(req.uri().path()));
        let measure = RequestMeasure {
            shared: self.shared.clone(),
            method,
            method_idx,
            https,
            route,
            durations,
            path,
            status: None,
            grpc,
            grpc_attributes: Vec::new(),
        };
        let op = Operation::started_at_time(cx.clone(), measure, start);
        let exchange = Box::new(Exchange::new(op, cx, request_id, w3c));
        let future = {
            let _attached = exchange.context().clone().attach();
            self.inner.call(req)
        };
        ResponseFuture::new(future, exchange)
    }
}

/// The matched route template, when a router recorded one.
fn matched_route<B>(req: &Request<B>) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(path) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Some(path.as_str());
    }
    let _ = req;
    None
}

fn client_address<B>(req: &Request<B>) -> Option<String> {
    if let Some(forwarded) = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        return Some(forwarded.to_owned());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(info.0.ip().to_string());
    }
    None
}

/// Host and port from the `Host` header (HTTP/1) or the URI authority (HTTP/2).
fn server_address<B>(req: &Request<B>) -> Option<(&str, Option<u16>)> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        let (host, tail) = rest.split_once(']')?;
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok())),
        None => Some((authority, None)),
    }
}

/// The attributes a recorded request span usually ends with: method, scheme, route, path,
/// server address and port, protocol version, user agent, client address, request id, status
/// code, error type, and room for a query and a recorded header or gRPC's three.
const SPAN_ATTRIBUTES: usize = 16;

/// Attributes only a recording span needs; never built for unsampled requests.
fn request_attributes<B>(
    req: &Request<B>,
    config: &Config,
    method_idx: usize,
    request_id: &RequestId,
    out: &mut Vec<KeyValue>,
) {
    let uri = req.uri();
    out.push(KeyValue::new(attr::URL_PATH, uri.path().to_owned()));
    if let Some(query) = uri.query() {
        out.push(KeyValue::new(
            attr::URL_QUERY,
            redact_query(query).into_owned(),
        ));
    }
    if method_idx == OTHER_METHOD {
        out.push(KeyValue::new(
            attr::HTTP_REQUEST_METHOD_ORIGINAL,
            req.method().as_str().to_owned(),
        ));
    }
    if let Some((host, port)) = server_address(req) {
        out.push(KeyValue::new(attr::SERVER_ADDRESS, host.to_owned()));
        if let Some(port) = port {
            out.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
        }
    }
    if let Some(version) = protocol_version(req.version()) {
        out.push(KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, version));
    }
    if let Some(ua) = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        out.push(KeyValue::new(attr::USER_AGENT_ORIGINAL, ua.to_owned()));
    }
    if let Some(client) = client_address(req) {
        out.push(KeyValue::new(attr::CLIENT_ADDRESS, client));
    }
    out.push(KeyValue::new(attr::REQUEST_ID, request_id));
    for (name, key) in &config.recorded_headers {
        let values: Vec<opentelemetry::StringValue> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| {
                let text = v.to_str().unwrap_or("<non-utf8>");
                config
                    .sensitive
                    .apply(name.as_str(), text)
                    .to_owned()
                    .into()
            })
            .collect();
        if !values.is_empty() {
            out.push(KeyValue::new(
                key.clone(),
                opentelemetry::Value::Array(values.into()),
            ));
        }
    }
}

/// The incoming request id when it is a sane token (1–128 characters of `[A-Za-z0-9._:-]`),
/// otherwise a fresh random 128-bit hex id ([`RequestId::generate`]).
fn request_id(headers: &HeaderMap, name: &http::HeaderName) -> RequestId {
    if let Some(value) = headers.get(name)
        && let Ok(text) = value.to_str()
        && (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return RequestId::new(text);
    }
    RequestId::generate()
}
