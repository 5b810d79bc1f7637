//! A tower service answering Prometheus scrapes.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus::{Encoder, TextEncoder};

/// Renders every tracewire metric in the Prometheus text format, or in the OpenMetrics text
/// format (with exemplars) when the request's `Accept` asks for
/// `application/openmetrics-text`. Mount it at `/metrics`:
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

    /// The current metrics in the OpenMetrics text format, the duration histograms' buckets
    /// carrying exemplars of kept traces (empty when Prometheus export is disabled).
    pub fn render_openmetrics(&self) -> String {
        match &self.registry {
            Some(registry) => crate::sampling::openmetrics::encode(&registry.gather()),
            None => String::new(),
        }
    }
}

impl<B> tower::Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Scrapers with exemplar storage ask for OpenMetrics, which carries exemplars.
        let openmetrics = request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(crate::sampling::openmetrics::wanted);
        let (body, content_type) = if openmetrics {
            (
                self.render_openmetrics(),
                crate::sampling::openmetrics::CONTENT_TYPE,
            )
        } else {
            (self.render(), "text/plain; version=0.0.4; charset=utf-8")
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        if self.registry.is_none() {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        ready(Ok(response))
    }
}
