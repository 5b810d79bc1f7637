//! Exemplars over OTLP/HTTP.
//!
//! The SDK's metric data cannot be changed by a wrapping exporter (its fields are private and
//! its aggregators write no exemplars). The OTLP/HTTP metric exporter, though, hands the
//! encoded request to a pluggable HTTP client: this client decodes it, attaches the
//! exemplars of kept traces to the matching histogram data points, re-encodes it and sends
//! it with the same blocking client the exporter would have used. Everything else
//! (endpoint, headers, retries, timeouts) stays the exporter's.

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, exemplar, metric};
use prost::Message;
use std::time::UNIX_EPOCH;

use super::exemplars;

/// The HTTP client of the OTLP metric exporter, adding exemplars on the way.
#[derive(Debug)]
pub(crate) struct ExemplarClient {
    inner: reqwest::blocking::Client,
}

impl ExemplarClient {
    /// Wraps the blocking client the exporter would have used (its TLS, timeout and proxy
    /// settings stay as they are).
    pub(crate) fn new(inner: reqwest::blocking::Client) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl HttpClient for ExemplarClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = with_exemplars(request);
        self.inner.send_bytes(request).await
    }
}

fn with_exemplars(request: Request<Bytes>) -> Request<Bytes> {
    if request.headers().contains_key(CONTENT_ENCODING) || !exemplars::any() {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let Ok(mut export) = ExportMetricsServiceRequest::decode(body.clone()) else {
        return Request::from_parts(parts, body);
    };
    if add(&mut export) == 0 {
        return Request::from_parts(parts, body);
    }
    let body = Bytes::from(export.encode_to_vec());
    parts.headers.remove(CONTENT_LENGTH);
    Request::from_parts(parts, body)
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// Attaches exemplars to the histogram data points of `export`; how many.
pub(crate) fn add(export: &mut ExportMetricsServiceRequest) -> usize {
    let mut added = 0;
    for metric in export
        .resource_metrics
        .iter_mut()
        .flat_map(|rm| rm.scope_metrics.iter_mut())
        .flat_map(|sm| sm.metrics.iter_mut())
    {
        if !exemplars::HISTOGRAMS
            .iter()
            .any(|(name, _)| *name == metric.name)
        {
            continue;
        }
        let Some(metric::Data::Histogram(histogram)) = &mut metric.data else {
            continue;
        };
        for point in &mut histogram.data_points {
            let attributes: &[KeyValue] = &point.attributes;
            let found = exemplars::for_point(
                &metric.name,
                attributes.iter().map(|kv| {
                    (
                        kv.key.as_str(),
                        kv.value.as_ref().map(render).unwrap_or_default(),
                    )
                }),
                false,
            );
            if found.len() != point.explicit_bounds.len() + 1 {
                continue;
            }
            for e in found.into_iter().flatten() {
                point.exemplars.push(Exemplar {
                    filtered_attributes: Vec::new(),
                    time_unix_nano: e
                        .time
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or_default(),
                    span_id: e.span_id.to_vec(),
                    trace_id: e.trace_id.to_vec(),
                    value: Some(exemplar::Value::AsDouble(e.value)),
                });
                added += 1;
            }
        }
    }
    added
}
