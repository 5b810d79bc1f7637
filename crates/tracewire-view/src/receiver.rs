//! The standalone view: OTLP over gRPC and HTTP/protobuf in, the pages out.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
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
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as ProtoStatus;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::model::{Kind, LogRecord, SpanEvent, SpanLink, SpanRecord, StatusCode as Code, hex};
use crate::service::ViewService;
use crate::store::{Limits, Store};

/// Resolves at the first SIGINT or SIGTERM; a second one exits the process at once.
pub use tracewire_core::signal::shutdown_signal;

/// Largest OTLP request accepted, decoded (gRPC) or as sent (HTTP).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Where the standalone view listens, and how much it keeps.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pages (`TRACEWIRE_VIEW_ADDR`, default `127.0.0.1:16686`).
    pub ui: String,
    /// OTLP/gRPC (`TRACEWIRE_VIEW_OTLP_GRPC_ADDR`, default `127.0.0.1:4317`).
    pub otlp_grpc: String,
    /// OTLP/HTTP (`TRACEWIRE_VIEW_OTLP_HTTP_ADDR`, default `127.0.0.1:4318`).
    pub otlp_http: String,
    /// Bounds of the ring (`TRACEWIRE_VIEW_MAX_TRACES`, `TRACEWIRE_VIEW_MAX_BYTES`).
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ui: "127.0.0.1:16686".into(),
            otlp_grpc: "127.0.0.1:4317".into(),
            otlp_http: "127.0.0.1:4318".into(),
            limits: Limits::default(),
        }
    }
}

/// A variable that does not parse.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The defaults, overridden by the `TRACEWIRE_VIEW_*` variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var("TRACEWIRE_VIEW_ADDR") {
            config.ui = v;
        }
        if let Some(v) = var("TRACEWIRE_VIEW_OTLP_GRPC_ADDR") {
            config.otlp_grpc = v;
        }
        if let Some(v) = var("TRACEWIRE_VIEW_OTLP_HTTP_ADDR") {
            config.otlp_http = v;
        }
        let number = |name: &str, value: String| {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ConfigError(format!("{name}={value:?}: expected a positive integer"))
                })
        };
        if let Some(v) = var("TRACEWIRE_VIEW_MAX_TRACES") {
            config.limits.max_traces = number("TRACEWIRE_VIEW_MAX_TRACES", v)?;
        }
        if let Some(v) = var("TRACEWIRE_VIEW_MAX_BYTES") {
            config.limits.max_bytes = number("TRACEWIRE_VIEW_MAX_BYTES", v)?;
        }
        Ok(config)
    }
}

/// The running standalone view. Dropping it stops the listeners.
#[derive(Debug)]
pub struct Running {
    /// Address of the pages.
    pub ui: SocketAddr,
    /// Address of the OTLP/gRPC listener.
    pub otlp_grpc: SocketAddr,
    /// Address of the OTLP/HTTP listener.
    pub otlp_http: SocketAddr,
    /// The ring.
    pub store: Store,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds the three listeners and serves them on the current tokio runtime.
pub async fn serve(config: &Config) -> io::Result<Running> {
    let bind = |what: &'static str, addr: String| async move {
        TcpListener::bind(&addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}"))
        })
    };
    let ui = bind("the pages", config.ui.clone()).await?;
    let grpc = bind("OTLP/gRPC", config.otlp_grpc.clone()).await?;
    let http = bind("OTLP/HTTP", config.otlp_http.clone()).await?;
    let store = Store::new(config.limits);
    let addrs = (ui.local_addr()?, grpc.local_addr()?, http.local_addr()?);

    let sink = Sink(store.clone());
    let grpc_task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(sink.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                LogsServiceServer::new(sink.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                MetricsServiceServer::new(sink).max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc))
            .await;
    });

    let traces = store.clone();
    let logs = store.clone();
    let otlp_http = Router::new()
        .route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| async move {
                decode_http::<ExportTraceServiceRequest, ExportTraceServiceResponse>(
                    &headers,
                    body,
                    |req| traces.insert_spans(spans_of(req)),
                )
            }),
        )
        .route(
            "/v1/logs",
            post(move |headers: HeaderMap, body: Bytes| async move {
                decode_http::<ExportLogsServiceRequest, ExportLogsServiceResponse>(
                    &headers,
                    body,
                    |req| logs.insert_logs(logs_of(req)),
                )
            }),
        )
        .route(
            "/v1/metrics",
            post(|headers: HeaderMap, body: Bytes| async move {
                decode_http::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
                    &headers,
                    body,
                    |_| {},
                )
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(http, otlp_http).await;
    });

    let pages = Router::new().fallback_service(ViewService::new(store.clone(), ""));
    let ui_task = tokio::spawn(async move {
        let _ = axum::serve(ui, pages).await;
    });

    Ok(Running {
        ui: addrs.0,
        otlp_grpc: addrs.1,
        otlp_http: addrs.2,
        store,
        tasks: vec![grpc_task, http_task, ui_task],
    })
}

fn decode_http<Req: Message + Default, Resp: Message + Default>(
    headers: &HeaderMap,
    body: Bytes,
    accept: impl FnOnce(Req),
) -> (StatusCode, Vec<u8>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    if !content_type.starts_with("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            b"send OTLP as application/x-protobuf (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)\n"
                .to_vec(),
        );
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity")
    {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            b"compressed OTLP requests are not accepted\n".to_vec(),
        );
    }
    match Req::decode(body) {
        Ok(req) => {
            accept(req);
            (StatusCode::OK, Resp::default().encode_to_vec())
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("not an OTLP protobuf request: {e}\n").into_bytes(),
        ),
    }
}

#[derive(Clone)]
struct Sink(Store);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.insert_spans(spans_of(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.insert_logs(logs_of(request.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        // Metrics are accepted so exporters configured for all signals stay quiet; the view
        // shows traces and logs only.
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(text).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.key,
                        p.value.as_ref().map(text).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn service_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(text)
        .unwrap_or_else(|| "unknown_service".into())
}

/// The spans of an OTLP request (spans with malformed ids are skipped).
pub fn spans_of(request: ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = service_of(rs.resource.as_ref());
        for ss in rs.scope_spans {
            for span in ss.spans {
                if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                    continue;
                }
                let (status, status_message) = match span.status {
                    Some(s) if s.code == ProtoStatus::Error as i32 => (Code::Error, s.message),
                    Some(s) if s.code == ProtoStatus::Ok as i32 => (Code::Ok, s.message),
                    _ => (Code::Unset, String::new()),
                };
                out.push(SpanRecord {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (span.parent_span_id.len() == 8
                        && span.parent_span_id.iter().any(|b| *b != 0))
                    .then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    kind: match SpanKind::try_from(span.kind) {
                        Ok(SpanKind::Server) => Kind::Server,
                        Ok(SpanKind::Client) => Kind::Client,
                        Ok(SpanKind::Producer) => Kind::Producer,
                        Ok(SpanKind::Consumer) => Kind::Consumer,
                        _ => Kind::Internal,
                    },
                    service: service.clone(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano.max(span.start_time_unix_nano),
                    status,
                    status_message,
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| SpanEvent {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .filter(|l| l.trace_id.len() == 16 && l.span_id.len() == 8)
                        .map(|l| SpanLink {
                            trace_id: hex(&l.trace_id),
                            span_id: hex(&l.span_id),
                            attributes: attributes(&l.attributes),
                        })
                        .collect(),
                    // Exported means kept.
                    sampled: true,
                });
            }
        }
    }
    out
}

/// The log records of an OTLP request that carry a trace and span id.
pub fn logs_of(request: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in request.resource_logs {
        for sl in rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for log in sl.log_records {
                if log.trace_id.len() != 16 || log.span_id.len() != 8 {
                    continue;
                }
                let time = if log.time_unix_nano != 0 {
                    log.time_unix_nano
                } else {
                    log.observed_time_unix_nano
                };
                out.push(LogRecord {
                    trace_id: hex(&log.trace_id),
                    span_id: hex(&log.span_id),
                    time_unix_nano: time,
                    level: if log.severity_text.is_empty() {
                        severity(log.severity_number).to_owned()
                    } else {
                        log.severity_text.to_uppercase()
                    },
                    target: scope.clone(),
                    message: log.body.as_ref().map(text).unwrap_or_default(),
                    fields: attributes(&log.attributes),
                });
            }
        }
    }
    out
}

fn severity(number: i32) -> &'static str {
    match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=24 => "ERROR",
        _ => "INFO",
    }
}
