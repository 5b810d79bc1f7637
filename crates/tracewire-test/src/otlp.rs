use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Default, Debug)]
struct Received {
    traces: Vec<(Transport, ExportTraceServiceRequest)>,
    metrics: Vec<(Transport, ExportMetricsServiceRequest)>,
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    Http,
}

/// A real OTLP receiver on two loopback ports: gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) and
/// HTTP/protobuf (`http/protobuf`, paths `/v1/traces` and `/v1/metrics`). Requests are decoded
/// with `opentelemetry-proto` and kept in memory.
///
/// ```no_run
/// # async fn demo() {
/// let receiver = tracewire_test::OtlpReceiver::start().await;
/// // point an exporter at receiver.grpc_endpoint() or receiver.http_endpoint() …
/// let spans = receiver.wait_for_spans(1, std::time::Duration::from_secs(10)).await;
/// # }
/// ```
#[derive(Debug)]
pub struct OtlpReceiver {
    grpc: SocketAddr,
    http: SocketAddr,
    received: Arc<Mutex<Received>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Received>>, Duration);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.1).await;
        if let Ok(mut r) = self.0.lock() {
            r.traces.push((Transport::Grpc, request.into_inner()));
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.1).await;
        if let Ok(mut r) = self.0.lock() {
            r.metrics.push((Transport::Grpc, request.into_inner()));
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Starts both listeners on ephemeral loopback ports. Needs a tokio runtime.
    pub async fn start() -> Self {
        Self::start_with_delay(Duration::ZERO).await
    }

    /// Starts a slow receiver: it answers every export request `delay` after receiving it
    /// (and keeps what it received from that moment).
    pub async fn start_with_delay(delay: Duration) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let grpc_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP gRPC listener");
        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP HTTP listener");
        let grpc = grpc_listener.local_addr().expect("gRPC address");
        let http = http_listener.local_addr().expect("HTTP address");

        let sink = Sink(received.clone(), delay);
        let grpc_task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(MetricsServiceServer::new(sink))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener))
                .await;
        });

        let traces = received.clone();
        let metrics = received.clone();
        let app = Router::new()
            .route(
                "/v1/traces",
                post(move |body: Bytes| async move {
                    tokio::time::sleep(delay).await;
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            if let Ok(mut r) = traces.lock() {
                                r.traces.push((Transport::Http, req));
                            }
                            (
                                StatusCode::OK,
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                        }
                        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                    }
                }),
            )
            .route(
                "/v1/metrics",
                post(move |body: Bytes| async move {
                    tokio::time::sleep(delay).await;
                    match ExportMetricsServiceRequest::decode(body) {
                        Ok(req) => {
                            if let Ok(mut r) = metrics.lock() {
                                r.metrics.push((Transport::Http, req));
                            }
                            (
                                StatusCode::OK,
                                ExportMetricsServiceResponse::default().encode_to_vec(),
                            )
                        }
                        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                    }
                }),
            );
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http_listener, app).await;
        });

        Self {
            grpc,
            http,
            received,
            tasks: vec![grpc_task, http_task],
        }
    }

    /// `http://127.0.0.1:<port>` of the gRPC listener.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:<port>` of the HTTP/protobuf listener (exporters append `/v1/…`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span received so far, over either transport.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (transport, request) in &received.traces {
            for rs in &request.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    let scope = ss
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for span in &ss.spans {
                        out.push(ReceivedSpan {
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: span.kind,
                            attributes: attributes(&span.attributes),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            status_code: span.status.as_ref().map(|s| s.code).unwrap_or(0),
                            grpc: *transport == Transport::Grpc,
                        });
                    }
                }
            }
        }
        out
    }

    /// Names of every metric received so far, with the resource attributes they came with.
    pub fn metric_names(&self) -> Vec<String> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        received
            .metrics
            .iter()
            .flat_map(|(_, r)| r.resource_metrics.iter())
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter())
            .map(|m| m.name.clone())
            .collect()
    }

    /// Every metric data point received so far (sums, gauges and histograms), one entry per
    /// point of every export, with its metric's name and its own attributes.
    pub fn metric_points(&self) -> Vec<ReceivedMetricPoint> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, request) in &received.metrics {
            for rm in &request.resource_metrics {
                let resource = rm
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for metric in rm.scope_metrics.iter().flat_map(|sm| sm.metrics.iter()) {
                    let point = |attrs: &[KeyValue], value: f64| ReceivedMetricPoint {
                        name: metric.name.clone(),
                        resource: resource.clone(),
                        attributes: attributes(attrs),
                        value,
                    };
                    match &metric.data {
                        Some(metric::Data::Sum(sum)) => out.extend(
                            sum.data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(p.value))),
                        ),
                        Some(metric::Data::Gauge(gauge)) => out.extend(
                            gauge
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(p.value))),
                        ),
                        Some(metric::Data::Histogram(histogram)) => out.extend(
                            histogram
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, p.count as f64)),
                        ),
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// Waits (up to `timeout`) until at least `n` spans have arrived, and returns them all.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to `timeout`) until a metric named `name` has arrived.
    pub async fn wait_for_metric(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metric_names().iter().any(|m| m == name) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A span as decoded from an OTLP export request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, 16 hex digits, empty for roots.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Span attributes rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes rendered as text.
    pub resource: BTreeMap<String, String>,
    /// Instrumentation scope name.
    pub scope: String,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Whether it arrived over gRPC (otherwise HTTP/protobuf).
    pub grpc: bool,
}

/// A metric data point as decoded from an OTLP export request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetricPoint {
    /// The metric's name.
    pub name: String,
    /// Resource attributes rendered as text.
    pub resource: BTreeMap<String, String>,
    /// The point's attributes rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// The value of a sum or gauge point; the number of measurements of a histogram point.
    pub value: f64,
}

fn number(value: Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(render).unwrap_or_default(),
            )
        })
        .collect()
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(render).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
