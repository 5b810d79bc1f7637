use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use http::{HeaderValue, Response};
use opentelemetry::propagation::Injector;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use pin_project_lite::pin_project;
use tracewire_core::RequestId;
use tracewire_core::attributes as attr;
use tracewire_core::error::{short_type_name, status_text};

use super::ServerBody;
use super::layer::ServerLayer;
use crate::classify::{Ending, GrpcCall, GrpcCode, LayerError, Side};

pin_project! {
    /// Response future of [`Server`](super::Server): attaches the request's context on every
    /// poll, then hands the span to the response body.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        finisher: Option<Finisher>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, finisher: Finisher) -> Self {
        Self {
            inner,
            finisher: Some(finisher),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display + 'static,
{
    type Output = Result<Response<ServerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _attached = this.finisher.as_ref().map(|f| f.cx.clone().attach());
            ready!(this.inner.poll(cx))
        };
        let mut finisher = this.finisher.take();
        Poll::Ready(match result {
            Ok(mut response) => {
                if let Some(f) = finisher.as_mut() {
                    f.on_response(&mut response);
                }
                Ok(response.map(|body| ServerBody::new(body, finisher)))
            }
            Err(error) => {
                if let Some(mut f) = finisher {
                    f.fail(short_type_name::<E>(), &error);
                    f.finish();
                }
                Err(error)
            }
        })
    }
}

/// Everything needed to end a request's telemetry, exactly once: explicitly when the body
/// ends or fails, or from `Drop` when the future or body is dropped (cancellation, panic).
pub(crate) struct Finisher {
    pub(crate) layer: ServerLayer,
    pub(crate) cx: Context,
    pub(crate) start: Instant,
    pub(crate) method: &'static str,
    pub(crate) method_idx: usize,
    pub(crate) https: bool,
    pub(crate) route: Option<Cow<'static, str>>,
    pub(crate) path: Option<Box<str>>,
    pub(crate) request_id: RequestId,
    /// Set when the call is recorded as gRPC.
    pub(crate) grpc: Option<GrpcCall>,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<Cow<'static, str>>,
    pub(crate) error_message: Option<String>,
    pub(crate) done: bool,
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

impl Finisher {
    fn on_response<B>(&mut self, response: &mut Response<B>) {
        self.status = Some(response.status().as_u16());
        if let Some(call) = &mut self.grpc {
            call.on_response_head(response.status(), response.headers());
        }
        let headers = response.headers_mut();
        tracewire_core::propagation::inject(
            &self.cx,
            &mut TraceparentOnly(crate::propagation::HeaderInjector(headers)),
        );
        if let Ok(value) = HeaderValue::from_str(self.request_id.as_str()) {
            headers.insert(self.layer.config.request_id_header.clone(), value);
        }
    }

    pub(crate) fn fail(&mut self, error_type: &'static str, error: &dyn fmt::Display) {
        self.error = Some(Cow::Borrowed(error_type));
        if self.cx.span().is_recording() {
            self.error_message = Some(error.to_string());
        }
    }

    /// Reads the response trailers (`grpc-status` of a gRPC call).
    pub(crate) fn on_trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(call) = &mut self.grpc {
            call.on_trailers(trailers);
        }
    }

    pub(crate) fn finish(&mut self) {
        let ending = if self.error.is_some() {
            Ending::Failed
        } else {
            Ending::Complete
        };
        self.end(ending);
    }

    fn end(&mut self, ending: Ending) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let span = self.cx.span();
        if let Some(call) = &mut self.grpc {
            // gRPC: judged by `grpc-status`, measured in `rpc.server.call.duration`.
            if let Some(status) = self.status {
                span.set_attribute(KeyValue::new(
                    attr::HTTP_RESPONSE_STATUS_CODE,
                    i64::from(status),
                ));
            }
            let error = self.error.take().map(|error_type| LayerError {
                error_type,
                message: self.error_message.take(),
            });
            let mut attributes = Vec::with_capacity(7);
            let classifier = &*self.layer.config.classifier;
            self.error = call.end(classifier, ending, error, &span, &mut attributes);
            let shared = &self.layer.shared;
            shared
                .rpc_duration
                .record(elapsed.as_secs_f64(), &attributes);
            shared.active.end(self.method_idx, self.https);
            let grpc_status = call.code().map(GrpcCode::as_str);
            self.log_access(elapsed, self.error.is_some(), grpc_status);
            span.end();
            return;
        }
        if let Some(status) = self.status {
            span.set_attribute(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
            if self.error.is_none()
                && let Ok(code) = http::StatusCode::from_u16(status)
                && self
                    .layer
                    .config
                    .classifier
                    .is_http_failure(code, Side::Server)
            {
                self.error = Some(Cow::Borrowed(status_text(status)));
                span.set_status(Status::error(""));
            }
        }
        if let Some(error) = &self.error {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error.clone()));
            if self.status.is_none_or(|s| s < 500) || self.error_message.is_some() {
                // Inner-service errors, body errors, panics and cancellations.
                let description = match self.error_message.take() {
                    Some(message) => Cow::Owned(message),
                    None => error.clone(),
                };
                span.set_status(Status::error(description));
            }
        }

        let shared = &self.layer.shared;
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method));
        attributes.push(KeyValue::new(
            attr::URL_SCHEME,
            super::layer::scheme(self.https),
        ));
        if let Some(route) = &self.route {
            attributes.push(KeyValue::new(attr::HTTP_ROUTE, route.clone()));
        }
        if let Some(status) = self.status {
            attributes.push(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        if let Some(error) = &self.error {
            attributes.push(KeyValue::new(attr::ERROR_TYPE, error.clone()));
        }
        shared.duration.record(elapsed.as_secs_f64(), &attributes);
        shared.active.end(self.method_idx, self.https);

        let failed = self.status.is_none_or(|s| s >= 500);
        self.log_access(elapsed, failed, None);
        span.end();
    }
}

impl Finisher {
    /// The access-log event of the request (target `tracewire::access`).
    fn log_access(&self, elapsed: Duration, failed: bool, grpc_status: Option<&'static str>) {
        if !self.layer.config.access_log {
            return;
        }
        let _attached = self.cx.clone().attach();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let route = self.route.as_deref();
        let path = self.path.as_deref();
        let error = self.error.as_deref();
        if failed {
            tracing::warn!(
                target: "tracewire::access",
                method = self.method,
                route,
                path,
                status = self.status,
                grpc_status,
                duration_ms,
                error,
                "request failed"
            );
        } else {
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
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if std::thread::panicking() {
            self.error = Some(Cow::Borrowed("panic"));
        } else if self.grpc.is_some() {
            // The client cancelled the call (or went away): `CANCELLED`, unless the response
            // head already carried a status.
            return self.end(Ending::Dropped);
        } else if self.status.is_none() {
            // Dropped before the inner service answered: the client went away or a timeout
            // cancelled the request.
            self.error = Some(Cow::Borrowed("cancelled"));
        }
        self.finish();
    }
}
