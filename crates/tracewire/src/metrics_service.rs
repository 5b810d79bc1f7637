//! A tower service answering Prometheus scrapes.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus::{Encoder, TextEncoder};

/// Renders every tracewire metric in the Prometheus text format. Mount it at `/metrics`:
/// `Router::route_service("/metrics", telemetry.metrics_service())`.
#[derive(Clone)]
pub struct MetricsService {
    registry: Option<prometheus::Registry>,
}

impl fmt::Debug for MetricsService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsService")
            .field("enabled", &self.registry.is_some())
            .finish()
    }
}

impl MetricsService {
    pub(crate) fn new(registry: Option<prometheus::Registry>) -> Self {
        Self { registry }
    }

    /// The current metrics as Prometheus text (empty when Prometheus export is disabled).
    pub fn render(&self) -> String {
        let Some(registry) = &self.registry else {
            return String::new();
        };
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a family the encoder rejects is skipped.
        let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl<B> tower::Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let mut response = Response::new(Full::new(Bytes::from(self.render())));
        if self.registry.is_none() {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        ready(Ok(response))
    }
}
