use std::fmt;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use opentelemetry::Context;
use tower::Service;

use super::ResendCounter;
use super::attempt::{Attempt, Instruments, Target};
use super::body::ResponseBody;
use super::future::ResponseFuture;

use crate::classify::{GrpcCall, Protocol, Side};

/// gRPC calls carry the request id of the call being served (if any) in `x-request-id`
/// metadata, unless the caller set one.
fn forward_request_id(headers: &mut http::HeaderMap) {
    const NAME: http::HeaderName = http::HeaderName::from_static("x-request-id");
    if headers.contains_key(&NAME) {
        return;
    }
    if let Some(id) = tracewire_core::RequestId::current()
        && let Ok(value) = http::HeaderValue::from_str(id.as_str())
    {
        headers.insert(NAME, value);
    }
}

/// An HTTP client service instrumented by [`ClientLayer`](super::ClientLayer): one CLIENT span
/// per request it sends, the trace context injected into the request headers.
#[derive(Clone)]
pub struct Client<S> {
    inner: S,
    instruments: Instruments,
}

impl<S: fmt::Debug> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Client<S> {
    pub(crate) fn new(inner: S, instruments: Instruments) -> Self {
        Self { inner, instruments }
    }

    /// Wraps `inner` with the globally installed tracer and meter providers; the same as
    /// `ClientLayer::new().layer(inner)`.
    pub fn wrap(inner: S) -> Self {
        Self::new(inner, Instruments::from_globals())
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the client.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Client<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let resend_count = request
            .extensions()
            .get::<ResendCounter>()
            .map_or(0, ResendCounter::next_attempt);
        let grpc = match self.instruments.classifier.protocol(
            request.method(),
            request.uri(),
            request.headers(),
        ) {
            Protocol::Grpc => {
                forward_request_id(request.headers_mut());
                Some(GrpcCall::start(request.uri().path(), Side::Client))
            }
            Protocol::Http => None,
        };
        let attempt = Context::map_current(|parent| {
            let target = Target::from_parts(request.method(), request.uri(), request.headers());
            Attempt::start_call(&self.instruments, parent, target, resend_count, grpc)
        });
        crate::propagation::inject_headers(attempt.context(), request.headers_mut());
        let future = {
            let _guard = attempt.context().clone().attach();
            self.inner.call(request)
        };
        ResponseFuture::new(future, attempt)
    }
}
