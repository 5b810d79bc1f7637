use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
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
use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric, number_data_point};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Default, Debug)]
struct Received {
    traces: Vec<(Transport, ExportTraceServiceRequest)>,
    metrics: Vec<(Transport, ExportMetricsServiceRequest)>,
    logs: Vec<(Transport, ExportLogsServiceRequest)>,
    requests: Vec<ReceivedRequest>,
}

/// How one export request arrived: its signal, transport, headers and encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// Whether it arrived over gRPC (otherwise HTTP/protobuf).
    pub grpc: bool,
    /// Request headers (gRPC metadata), names lowercase; repeated names joined with `,`.
    pub headers: BTreeMap<String, String>,
    /// Whether the body was gzip-compressed (`content-encoding: gzip` over HTTP,
    /// `grpc-encoding: gzip` over gRPC).
    pub gzip: bool,
    /// Whether it came over TLS.
    pub tls: bool,
}

fn header_map(headers: &axum::http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
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
    tls: Option<crate::tls::TestCertificates>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
/// What the receiver keeps, whether it serves TLS, and how long it waits before answering.
struct Sink(Arc<Mutex<Received>>, bool, Duration);

impl Sink {
    fn record<T>(&self, signal: &'static str, request: &tonic::Request<T>) {
        let headers = request.metadata().clone().into_headers();
        let gzip = headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if let Ok(mut r) = self.0.lock() {
            r.requests.push(ReceivedRequest {
                signal,
                grpc: true,
                headers: header_map(&headers),
                gzip,
                tls: self.1,
            });
        }
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.record("traces", &request);
        tokio::time::sleep(self.2).await;
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
        self.record("metrics", &request);
        tokio::time::sleep(self.2).await;
        if let Ok(mut r) = self.0.lock() {
            r.metrics.push((Transport::Grpc, request.into_inner()));
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.record("logs", &request);
        if let Ok(mut r) = self.0.lock() {
            r.logs.push((Transport::Grpc, request.into_inner()));
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Decodes one OTLP/HTTP request body (gunzipping it when `content-encoding: gzip`), records
/// how it arrived, and answers as a collector does.
fn accept_http<Req: Message + Default, Resp: Message + Default>(
    received: &Mutex<Received>,
    signal: &'static str,
    tls: bool,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    keep: impl FnOnce(&mut Received, Req),
) -> (StatusCode, Vec<u8>) {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = if gzip {
        let mut out = Vec::new();
        if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).is_err() {
            return (StatusCode::BAD_REQUEST, Vec::new());
        }
        out
    } else {
        body.to_vec()
    };
    match Req::decode(body.as_slice()) {
        Ok(req) => {
            if let Ok(mut r) = received.lock() {
                r.requests.push(ReceivedRequest {
                    signal,
                    grpc: false,
                    headers: header_map(headers),
                    gzip,
                    tls,
                });
                keep(&mut r, req);
            }
            (StatusCode::OK, Resp::default().encode_to_vec())
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

impl OtlpReceiver {
    /// Starts both listeners on ephemeral loopback ports. Needs a tokio runtime.
    pub async fn start() -> Self {
        Self::start_with(None, Duration::ZERO).await
    }

    /// Starts both listeners serving TLS only, with a certificate for `127.0.0.1` and
    /// `localhost` issued by a CA made for this receiver ([`OtlpReceiver::ca_file`]); the
    /// endpoints are `https://`. Clients need not present a certificate.
    pub async fn start_tls() -> Self {
        Self::start_with(
            Some(crate::tls::TestCertificates::generate(false)),
            Duration::ZERO,
        )
        .await
    }

    /// Like [`OtlpReceiver::start_tls`], and clients must present a certificate issued by the
    /// same CA ([`OtlpReceiver::client_cert_file`], [`OtlpReceiver::client_key_file`]).
    pub async fn start_mutual_tls() -> Self {
        Self::start_with(
            Some(crate::tls::TestCertificates::generate(true)),
            Duration::ZERO,
        )
        .await
    }

    /// Starts a slow receiver: it answers every export request `delay` after receiving it
    /// (and keeps what it received from that moment).
    pub async fn start_with_delay(delay: Duration) -> Self {
        Self::start_with(None, delay).await
    }

    async fn start_with(tls: Option<crate::tls::TestCertificates>, delay: Duration) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let grpc_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP gRPC listener");
        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP HTTP listener");
        let grpc = grpc_listener.local_addr().expect("gRPC address");
        let http = http_listener.local_addr().expect("HTTP address");

        let is_tls = tls.is_some();
        let sink = Sink(received.clone(), is_tls, delay);
        let mut server = tonic::transport::Server::builder();
        if let Some(certs) = &tls {
            server = server
                .tls_config(certs.tonic_server_config())
                .expect("gRPC TLS configuration");
        }
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        let grpc_task = tokio::spawn(async move {
            let _ = server
                .add_service(TraceServiceServer::new(sink.clone()).accept_compressed(gzip))
                .add_service(MetricsServiceServer::new(sink.clone()).accept_compressed(gzip))
                .add_service(LogsServiceServer::new(sink).accept_compressed(gzip))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener))
                .await;
        });

        let traces = received.clone();
        let metrics = received.clone();
        let logs = received.clone();
        let app = Router::new()
            .route(
                "/v1/traces",
                post(
                    move |headers: axum::http::HeaderMap, body: Bytes| async move {
                        tokio::time::sleep(delay).await;
                        accept_http::<ExportTraceServiceRequest, ExportTraceServiceResponse>(
                            &traces,
                            "traces",
                            is_tls,
                            &headers,
                            &body,
                            |r, req| r.traces.push((Transport::Http, req)),
                        )
                    },
                ),
            )
            .route(
                "/v1/metrics",
                post(
                    move |headers: axum::http::HeaderMap, body: Bytes| async move {
                        tokio::time::sleep(delay).await;
                        accept_http::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
                            &metrics,
                            "metrics",
                            is_tls,
                            &headers,
                            &body,
                            |r, req| r.metrics.push((Transport::Http, req)),
                        )
                    },
                ),
            )
            .route(
                "/v1/logs",
                post(
                    move |headers: axum::http::HeaderMap, body: Bytes| async move {
                        tokio::time::sleep(delay).await;
                        accept_http::<ExportLogsServiceRequest, ExportLogsServiceResponse>(
                            &logs,
                            "logs",
                            is_tls,
                            &headers,
                            &body,
                            |r, req| r.logs.push((Transport::Http, req)),
                        )
                    },
                ),
            );
        let http_task = match &tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(http_listener, app).await;
            }),
            Some(certs) => tokio::spawn(crate::tls::serve_https(
                http_listener,
                certs.rustls_server_config(),
                app,
            )),
        };

        Self {
            grpc,
            http,
            received,
            tasks: vec![grpc_task, http_task],
            tls,
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `http://127.0.0.1:<port>` of the gRPC listener (`https://` when serving TLS).
    pub fn grpc_endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc)
    }

    /// `http://127.0.0.1:<port>` of the HTTP/protobuf listener (exporters append `/v1/…`;
    /// `https://` when serving TLS).
    pub fn http_endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.http)
    }

    /// The PEM file of the CA that issued the server certificate (for
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`); `None` without TLS.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|t| t.ca_file())
    }

    /// The PEM file of a client certificate the receiver accepts (for
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`); `None` without mutual TLS.
    pub fn client_cert_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().and_then(|t| t.client_cert_file())
    }

    /// The PEM file of that client certificate's key (`OTEL_EXPORTER_OTLP_CLIENT_KEY`).
    pub fn client_key_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().and_then(|t| t.client_key_file())
    }

    /// Every export request received so far, in arrival order: signal, transport, headers,
    /// compression.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.received
            .lock()
            .map(|r| r.requests.clone())
            .unwrap_or_default()
    }

    /// Every log record received so far, over either transport.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (transport, request) in &received.logs {
            for rl in &request.resource_logs {
                let resource = rl
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for sl in &rl.scope_logs {
                    let scope = sl
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for record in &sl.log_records {
                        out.push(ReceivedLog {
                            trace_id: hex(&record.trace_id),
                            span_id: hex(&record.span_id),
                            severity_number: record.severity_number,
                            severity_text: record.severity_text.clone(),
                            body: record.body.as_ref().map(render).unwrap_or_default(),
                            event_name: record.event_name.clone(),
                            attributes: attributes(&record.attributes),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            grpc: *transport == Transport::Grpc,
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits (up to `timeout`) until at least `n` log records have arrived, and returns them.
    pub async fn wait_for_logs(&self, n: usize, timeout: Duration) -> Vec<ReceivedLog> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.len() >= n || Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
                            trace_state: span.trace_state.clone(),
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

    /// Every exemplar of every histogram data point received so far, with its metric's name
    /// and the point's attributes.
    pub fn metric_exemplars(&self) -> Vec<ReceivedExemplar> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, request) in &received.metrics {
            for metric in request
                .resource_metrics
                .iter()
                .flat_map(|rm| rm.scope_metrics.iter())
                .flat_map(|sm| sm.metrics.iter())
            {
                let Some(metric::Data::Histogram(histogram)) = &metric.data else {
                    continue;
                };
                for point in &histogram.data_points {
                    for exemplar in &point.exemplars {
                        out.push(ReceivedExemplar {
                            name: metric.name.clone(),
                            attributes: attributes(&point.attributes),
                            trace_id: hex(&exemplar.trace_id),
                            span_id: hex(&exemplar.span_id),
                            value: match exemplar.value {
                                Some(exemplar::Value::AsDouble(d)) => d,
                                Some(exemplar::Value::AsInt(i)) => i as f64,
                                None => 0.0,
                            },
                            time_unix_nano: exemplar.time_unix_nano,
                        });
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
    /// The W3C `tracestate` of the span (empty when none).
    pub trace_state: String,
}

/// An exemplar of a histogram data point, as decoded from an OTLP export request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedExemplar {
    /// The histogram's name.
    pub name: String,
    /// The data point's attributes rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// The measured value.
    pub value: f64,
    /// When it was measured.
    pub time_unix_nano: u64,
}

/// A log record as decoded from an OTLP export request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLog {
    /// Trace id, 32 hex digits (empty when the record has none).
    pub trace_id: String,
    /// Span id, 16 hex digits (empty when the record has none).
    pub span_id: String,
    /// OTLP severity number (9 INFO, 13 WARN, 17 ERROR, …).
    pub severity_number: i32,
    /// Severity text (`INFO`, …).
    pub severity_text: String,
    /// The body rendered as text.
    pub body: String,
    /// The record's event name.
    pub event_name: String,
    /// Attributes rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes rendered as text.
    pub resource: BTreeMap<String, String>,
    /// Instrumentation scope name.
    pub scope: String,
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
