//! OTLP exporter transport: endpoint, protocol, TLS, headers, compression and timeout of the
//! span, metric and log exporters, resolved from the code, then the signal's own variable
//! (`OTEL_EXPORTER_OTLP_TRACES_…`), then the general one (`OTEL_EXPORTER_OTLP_…`).
//!
//! Every value is checked before an exporter is built: a CA file that cannot be read, a key
//! without its certificate, an unknown compression or a malformed header list is an
//! [`InitError`] naming the variable, not a failure discovered at shutdown.
//!
//! TLS is rustls everywhere (one crypto provider, aws-lc-rs): gRPC through tonic, HTTP through
//! a blocking reqwest client built here with the system's roots plus
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, and the client certificate when one is given.

mod limits;
mod tls;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_otlp::{
    Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};

pub(crate) use limits::LimitValues;

use crate::config::Env;
use crate::{InitError, OtlpProtocol};

/// One of the three signals an exporter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_<setting>` and `OTEL_EXPORTER_OTLP_<setting>`, in the
    /// order they are consulted.
    fn vars(self, setting: &str) -> [String; 2] {
        let signal = self.name().to_ascii_uppercase();
        [
            format!("OTEL_EXPORTER_OTLP_{signal}_{setting}"),
            format!("OTEL_EXPORTER_OTLP_{setting}"),
        ]
    }
}

/// The first of the signal's variables for `setting` that is set: (variable, value).
fn lookup(env: &dyn Env, signal: Signal, setting: &str) -> Option<(String, String)> {
    signal
        .vars(setting)
        .into_iter()
        .find_map(|var| env.get(&var).map(|value| (var, value)))
}

fn invalid(variable: &str, value: &str, expected: &str) -> InitError {
    InitError::InvalidSetting {
        variable: variable.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// Everything an exporter of one signal needs, checked.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) signal: Signal,
    pub(crate) protocol: OtlpProtocol,
    /// The collector's base URL given in code (the signal path is added for HTTP).
    pub(crate) endpoint: Option<String>,
    pub(crate) https: bool,
    pub(crate) headers: http::HeaderMap,
    pub(crate) compression: Option<Compression>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) tls: tls::TlsFiles,
}

impl Transport {
    /// Resolves and checks the transport of `signal`.
    pub(crate) fn resolve(
        env: &dyn Env,
        signal: Signal,
        endpoint: Option<&str>,
        protocol: Option<OtlpProtocol>,
    ) -> Result<Self, InitError> {
        let protocol = match protocol {
            Some(p) => p,
            None => match lookup(env, signal, "PROTOCOL") {
                None => OtlpProtocol::HttpProtobuf,
                Some((var, value)) => match value.as_str() {
                    "grpc" => OtlpProtocol::Grpc,
                    "http/protobuf" => OtlpProtocol::HttpProtobuf,
                    _ => {
                        return Err(InitError::UnsupportedProtocol {
                            variable: static_var(&var),
                            value,
                        });
                    }
                },
            },
        };
        let resolved_endpoint = match endpoint {
            Some(e) => Some(e.to_owned()),
            None => lookup(env, signal, "ENDPOINT").map(|(_, v)| v),
        };
        let https = match resolved_endpoint.as_deref() {
            None => false,
            Some(e) => match e.split_once("://") {
                Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
                    scheme.eq_ignore_ascii_case("https")
                }
                // A gRPC endpoint without a scheme is TLS unless `…_INSECURE=true`, as the
                // SDK reads it.
                _ => {
                    protocol == OtlpProtocol::Grpc
                        && !lookup(env, signal, "INSECURE")
                            .is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"))
                }
            },
        };

        let headers = match lookup(env, signal, "HEADERS") {
            None => http::HeaderMap::new(),
            Some((var, value)) => parse_headers(&var, &value)?,
        };
        let compression = match lookup(env, signal, "COMPRESSION") {
            None => None,
            Some((var, value)) => match value.to_ascii_lowercase().as_str() {
                "gzip" => Some(Compression::Gzip),
                "none" => None,
                _ => return Err(invalid(&var, &value, "`gzip` or `none`")),
            },
        };
        let mut timeout = match lookup(env, signal, "TIMEOUT") {
            None => None,
            Some((var, value)) => Some(
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| invalid(&var, &value, "a duration in milliseconds"))?,
            ),
        };
        if timeout.is_none() && signal == Signal::Metrics {
            // The periodic reader leaves the export deadline to the exporter.
            timeout = crate::config::millis(env, "OTEL_METRIC_EXPORT_TIMEOUT")?;
        }
        let tls = tls::TlsFiles::resolve(env, signal)?;
        Ok(Self {
            signal,
            protocol,
            endpoint: endpoint.map(str::to_owned),
            https,
            headers,
            compression,
            timeout,
            tls,
        })
    }

    fn export_error(&self) -> impl Fn(opentelemetry_otlp::ExporterBuildError) -> InitError + '_ {
        move |source| InitError::Exporter {
            signal: self.signal.name(),
            source,
        }
    }

    fn tonic<B: WithExportConfig + WithTonicConfig>(&self, builder: B) -> Result<B, InitError> {
        tokio::runtime::Handle::try_current().map_err(|_| InitError::NoRuntime)?;
        let mut builder = builder.with_protocol(Protocol::Grpc);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if !self.headers.is_empty() {
            builder = builder.with_metadata(
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                    self.headers.clone(),
                ),
            );
        }
        if let Some(compression) = self.compression {
            builder = builder.with_compression(compression);
        }
        if let Some(timeout) = self.timeout {
            builder = builder.with_timeout(timeout);
        }
        if self.https {
            builder = builder.with_tls_config(self.tls.tonic_config());
        }
        Ok(builder)
    }

    fn http<B: WithExportConfig + WithHttpConfig>(&self, builder: B) -> Result<B, InitError> {
        self.http_with(builder, |client| client)
    }

    /// As [`Self::http`], with the exporter's HTTP client wrapped by `wrap`.
    fn http_with<B, C>(
        &self,
        builder: B,
        wrap: impl FnOnce(reqwest::blocking::Client) -> C,
    ) -> Result<B, InitError>
    where
        B: WithExportConfig + WithHttpConfig,
        C: opentelemetry_http::HttpClient + 'static,
    {
        let mut builder = builder.with_protocol(Protocol::HttpBinary);
        if let Some(endpoint) = &self.endpoint {
            // Given in code, the endpoint is the collector's base URL: add the signal path,
            // as the SDK does for OTEL_EXPORTER_OTLP_ENDPOINT.
            builder = builder.with_endpoint(format!(
                "{}/v1/{}",
                endpoint.trim_end_matches('/'),
                self.signal.name()
            ));
        }
        if !self.headers.is_empty() {
            let headers: HashMap<String, String> = self
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            builder = builder.with_headers(headers);
        }
        if let Some(compression) = self.compression {
            builder = builder.with_compression(compression);
        }
        let timeout = self
            .timeout
            .unwrap_or(opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT);
        builder = builder.with_timeout(timeout);
        let client = self.tls.http_client(timeout)?;
        Ok(builder.with_http_client(wrap(client)))
    }
}

/// The variable names [`InitError::UnsupportedProtocol`] can carry.
fn static_var(var: &str) -> &'static str {
    [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    ]
    .into_iter()
    .find(|v| *v == var)
    .unwrap_or("OTEL_EXPORTER_OTLP_PROTOCOL")
}

/// Parses `key1=value1,key2=value2` (values percent-decoded), as the specification describes
/// `OTEL_EXPORTER_OTLP_HEADERS`. The value is never echoed in errors: it often holds an API key.
pub(crate) fn parse_headers(var: &str, value: &str) -> Result<http::HeaderMap, InitError> {
    let mut headers = http::HeaderMap::new();
    let hidden = "(not shown: it may hold credentials)";
    for (n, item) in value.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let bad = |what: &str| {
            invalid(
                var,
                hidden,
                &format!(
                    "`key=value` pairs separated by commas; entry {} {what}",
                    n + 1
                ),
            )
        };
        let Some((key, val)) = item.split_once('=') else {
            return Err(bad("has no `=`"));
        };
        let name = http::HeaderName::from_bytes(key.trim().as_bytes())
            .map_err(|_| bad("has an invalid header name"))?;
        let decoded = percent_decode(val.trim()).ok_or_else(|| bad("has an invalid %-escape"))?;
        let val = http::HeaderValue::from_str(&decoded)
            .map_err(|_| bad("has a value that is not a valid header value"))?;
        headers.append(name, val);
    }
    Ok(headers)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The OTLP span exporter for `transport`, behind the attribute value length limit.
pub(crate) fn span_exporter(
    transport: &Transport,
    value_length: Option<usize>,
) -> Result<LimitValues<opentelemetry_otlp::SpanExporter>, InitError> {
    let err = transport.export_error();
    let exporter = match transport.protocol {
        OtlpProtocol::Grpc => transport
            .tonic(opentelemetry_otlp::SpanExporter::builder().with_tonic())?
            .build(),
        OtlpProtocol::HttpProtobuf => transport
            .http(opentelemetry_otlp::SpanExporter::builder().with_http())?
            .build(),
    }
    .map_err(err)?;
    Ok(LimitValues::new(exporter, value_length))
}

/// The OTLP metric exporter for `transport`.
pub(crate) fn metric_exporter(
    transport: &Transport,
) -> Result<opentelemetry_otlp::MetricExporter, InitError> {
    let err = transport.export_error();
    match transport.protocol {
        OtlpProtocol::Grpc => transport
            .tonic(opentelemetry_otlp::MetricExporter::builder().with_tonic())?
            .build(),
        // The exemplars of kept traces ride on the encoded request (see `sampling::otlp`).
        OtlpProtocol::HttpProtobuf => transport
            .http_with(
                opentelemetry_otlp::MetricExporter::builder().with_http(),
                crate::sampling::otlp::ExemplarClient::new,
            )?
            .build(),
    }
    .map_err(err)
}

/// The OTLP log exporter for `transport`.
pub(crate) fn log_exporter(
    transport: &Transport,
) -> Result<opentelemetry_otlp::LogExporter, InitError> {
    let err = transport.export_error();
    match transport.protocol {
        OtlpProtocol::Grpc => transport
            .tonic(opentelemetry_otlp::LogExporter::builder().with_tonic())?
            .build(),
        OtlpProtocol::HttpProtobuf => transport
            .http(opentelemetry_otlp::LogExporter::builder().with_http())?
            .build(),
    }
    .map_err(err)
}

/// The `tracing` layer sending events to the OTLP log pipeline: every event passing the
/// subscriber's filter except those of the pipeline's own libraries (an exporter logging its
/// own export would feed itself).
pub(crate) fn log_layer<S>(
    provider: &opentelemetry_sdk::logs::SdkLoggerProvider,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(provider).with_filter(
        tracing_subscriber::filter::filter_fn(|meta| {
            !tracewire_core::bridge::is_pipeline_target(meta.target())
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    fn error_of(pairs: &[(&str, &str)], signal: Signal) -> String {
        Transport::resolve(&env(pairs), signal, None, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn signal_variables_win_over_general_ones() {
        let t = Transport::resolve(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    "https://logs:4318/v1/logs",
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme"),
                (
                    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
                    "x-tenant=logs%20team, x-other = 1",
                ),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "700"),
            ]),
            Signal::Logs,
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
        assert!(t.https);
        assert_eq!(t.headers["x-tenant"], "logs team");
        assert_eq!(t.headers["x-other"], "1");
        assert_eq!(t.compression, None);
        assert_eq!(t.timeout, Some(Duration::from_millis(700)));

        let t = Transport::resolve(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            Signal::Traces,
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.protocol, OtlpProtocol::Grpc);
        assert!(!t.https);
        assert_eq!(t.headers["x-tenant"], "acme");
        assert!(matches!(t.compression, Some(Compression::Gzip)));
        assert_eq!(t.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn tls_follows_the_scheme_and_insecure_for_scheme_less_grpc() {
        let https = |pairs: &[(&str, &str)]| {
            Transport::resolve(&env(pairs), Signal::Traces, None, None)
                .unwrap()
                .https
        };
        assert!(https(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "HTTPS://collector:4318"
        )]));
        assert!(!https(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )]));
        assert!(!https(&[]));
        let grpc = ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        assert!(https(&[
            grpc,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")
        ]));
        assert!(!https(&[
            grpc,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]));
        assert!(!https(&[
            grpc,
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "TRUE"),
        ]));
    }

    #[test]
    fn metric_export_timeout_applies_without_an_otlp_timeout() {
        let pairs = [("OTEL_METRIC_EXPORT_TIMEOUT", "1500")];
        let t = Transport::resolve(&env(&pairs), Signal::Metrics, None, None).unwrap();
        assert_eq!(t.timeout, Some(Duration::from_millis(1500)));
        let t = Transport::resolve(&env(&pairs), Signal::Traces, None, None).unwrap();
        assert_eq!(t.timeout, None);
        let pairs = [
            ("OTEL_METRIC_EXPORT_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "300"),
        ];
        let t = Transport::resolve(&env(&pairs), Signal::Metrics, None, None).unwrap();
        assert_eq!(t.timeout, Some(Duration::from_millis(300)));
        let e = error_of(&[("OTEL_METRIC_EXPORT_TIMEOUT", "1s")], Signal::Metrics);
        assert!(e.contains("OTEL_METRIC_EXPORT_TIMEOUT"), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_name_their_variable() {
        for (pairs, signal, variable) in [
            (
                vec![("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")],
                Signal::Traces,
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd")],
                Signal::Metrics,
                "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
                Signal::Logs,
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad name=1")],
                Signal::Traces,
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz")],
                Signal::Traces,
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                Signal::Traces,
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")],
                Signal::Logs,
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
                Signal::Traces,
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            (
                vec![(
                    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
                    "/nonexistent/key.pem",
                )],
                Signal::Metrics,
                "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            ),
        ] {
            let e = error_of(&pairs, signal);
            assert!(e.contains(variable), "{pairs:?}: {e}");
        }
        // Header values never appear in messages.
        let e = error_of(
            &[("OTEL_EXPORTER_OTLP_HEADERS", "secret-token")],
            Signal::Traces,
        );
        assert!(!e.contains("secret-token"), "{e}");
    }
}
