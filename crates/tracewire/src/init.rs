//! `tracewire::init()`: one call that wires traces, metrics and logs.

use std::fmt;
use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracewire_core::logs::JsonLayer;
use tracewire_core::redact::SensitiveHeaders;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::MetricsService;

/// The default [`Builder::metric_cardinality_limit`].
const DEFAULT_CARDINALITY_LIMIT: usize = 2000;

/// Sets up traces, metrics and logs from the standard `OTEL_*` environment variables, with
/// the defaults described on [`Builder`]. Same as `tracewire::builder().init()`.
///
/// Keep the returned [`Telemetry`] alive for the life of the program: dropping it flushes
/// and shuts the pipeline down.
pub fn init() -> Result<Telemetry, InitError> {
    builder().init()
}

/// A [`Builder`] to override the environment in code.
pub fn builder() -> Builder {
    Builder::default()
}

/// Why the pipeline could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// An OTLP exporter rejected its configuration (endpoint, headers, …).
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// What the exporter said.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// `OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL` holds a value tracewire does not export with.
    #[error("{variable}={value:?} is not supported: use `grpc` or `http/protobuf` (the default)")]
    UnsupportedProtocol {
        /// The variable read.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// OTLP over gRPC needs a tokio runtime to drive its connection.
    #[error(
        "OTLP over gRPC needs a tokio runtime: call tracewire::init() inside #[tokio::main] (or Runtime::enter), or use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
    )]
    NoRuntime,
    /// The Prometheus reader could not be created.
    #[error("cannot set up the Prometheus exporter: {0}")]
    Prometheus(String),
    /// `RUST_LOG` (or the filter given to the builder) does not parse.
    #[error("invalid log filter {filter:?}: {message}")]
    LogFilter {
        /// The filter text.
        filter: String,
        /// The parse error.
        message: String,
    },
    /// An environment variable (or its builder equivalent) holds a value that cannot work.
    #[error("{variable}={value:?} is not valid: expected {expected}")]
    InvalidSetting {
        /// The variable read.
        variable: String,
        /// Its value (hidden for header lists, which carry credentials).
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A TLS file named by an exporter variable is missing, unreadable or unusable.
    #[error("{variable}: {message}")]
    Tls {
        /// The variable naming the file (`OTEL_EXPORTER_OTLP_CERTIFICATE`, …).
        variable: String,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client of the OTLP/HTTP exporters could not be created.
    #[error("cannot create the OTLP/HTTP client: {0}")]
    HttpClient(String),
    /// `TRACEWIRE_LOG_RATE_LIMIT` is not a whole number of events per second.
    #[error(
        "TRACEWIRE_LOG_RATE_LIMIT={value:?} is not a number of events per second (0 turns the limit off)"
    )]
    LogRateLimit {
        /// The variable's value.
        value: String,
    },
    /// A global `tracing` subscriber was installed before `init()`.
    #[error(
        "a global tracing subscriber is already installed: build with `.without_logs()` and add `tracewire::logs::JsonLayer` to your subscriber instead"
    )]
    SubscriberAlreadySet,
    /// A sampling setting (`TRACEWIRE_SAMPLING_*`, or the builder) is invalid.
    #[error("{variable}={value:?} is invalid: {message}")]
    Sampling {
        /// The variable (or builder method) read.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Transport of the OTLP exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

/// Configuration of the telemetry pipeline. Every setting left alone follows the standard
/// OpenTelemetry environment variables:
///
/// | setting | environment | default |
/// |---|---|---|
/// | service name | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the executable's name |
/// | resource | `OTEL_RESOURCE_ATTRIBUTES` | `service.instance.id`, `host.name`, `process.pid` |
/// | OTLP export | `OTEL_EXPORTER_OTLP_[TRACES_\|METRICS_]ENDPOINT` | off when no endpoint is set |
/// | OTLP transport | `OTEL_EXPORTER_OTLP_[TRACES_\|METRICS_]PROTOCOL` | `http/protobuf` |
/// | sampler | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `parentbased_always_on` |
/// | metric export interval | `OTEL_METRIC_EXPORT_INTERVAL` | 60 s |
/// | exporters off | `OTEL_TRACES_EXPORTER=none`, `OTEL_METRICS_EXPORTER=none` | on |
/// | log filter | `RUST_LOG` | `info` |
/// | sampling | `TRACEWIRE_SAMPLING_RATIO`, `_SLOW`, `_RULES`, … ([`crate::sampling`]) | keep all; failing, slow, synthetic always |
/// | log events per second per callsite | `TRACEWIRE_LOG_RATE_LIMIT` (0 = off) | 100 |
///
/// Spans are exported in batches on a background thread through a bounded queue: when the
/// collector is down, spans are dropped (and counted in `tracewire.telemetry.dropped`, with
/// the `signal` and `reason` of every drop), memory stays bounded and requests are not slowed.
///
/// ```no_run
/// # fn main() -> Result<(), tracewire::InitError> {
/// let telemetry = tracewire::builder()
///     .service_name("checkout")
///     .service_version(env!("CARGO_PKG_VERSION"))
///     .init()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `.init()` is called"]
pub struct Builder {
    service_name: Option<String>,
    service_version: Option<String>,
    attributes: Vec<KeyValue>,
    sampler: Option<Sampler>,
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<OtlpProtocol>,
    otlp: bool,
    prometheus: bool,
    logs: bool,
    log_filter: Option<String>,
    log_writer: Option<BoxMakeWriter>,
    metric_interval: Option<Duration>,
    sensitive: SensitiveHeaders,
    propagator: Option<Box<dyn TextMapPropagator + Send + Sync>>,
    pii_hash_key: Option<Vec<u8>>,
    pub(crate) sampling: crate::sampling::Options,
    otlp_logs: Option<bool>,
    tracing_spans: Option<bool>,
    exemplar_filter: Option<crate::config::ExemplarFilter>,
    shutdown_timeout: Duration,
    span_queue_size: Option<usize>,
    log_rate_limit: Option<u64>,
    rate_limit_access_log: bool,
    cardinality_limit: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("otlp_protocol", &self.otlp_protocol)
            .field("otlp", &self.otlp)
            .field("prometheus", &self.prometheus)
            .field("logs", &self.logs)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            service_name: None,
            service_version: None,
            attributes: Vec::new(),
            sampler: None,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp: true,
            prometheus: true,
            logs: true,
            log_filter: None,
            log_writer: None,
            metric_interval: None,
            sensitive: SensitiveHeaders::default(),
            propagator: None,
            pii_hash_key: None,
            sampling: crate::sampling::Options::default(),
            otlp_logs: None,
            tracing_spans: None,
            exemplar_filter: None,
            shutdown_timeout: crate::shutdown::DEFAULT_TIMEOUT,
            span_queue_size: None,
            log_rate_limit: None,
            rate_limit_access_log: false,
            cardinality_limit: DEFAULT_CARDINALITY_LIMIT,
        }
    }
}

impl Builder {
    /// Sets `service.name` (wins over `OTEL_SERVICE_NAME`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Sets `service.version`; pass `env!("CARGO_PKG_VERSION")`.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// Adds a resource attribute.
    pub fn resource_attribute(mut self, attribute: KeyValue) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// Uses `sampler` instead of the one `OTEL_TRACES_SAMPLER` describes.
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// Exports traces and metrics over OTLP to `endpoint` (`http://host:port`), whatever
    /// the environment says.
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(endpoint.into());
        self
    }

    /// Chooses the OTLP transport, whatever the environment says.
    pub fn otlp_protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.otlp_protocol = Some(protocol);
        self
    }

    /// Never exports over OTLP, even when the environment names an endpoint.
    pub fn without_otlp(mut self) -> Self {
        self.otlp = false;
        self
    }

    /// Does not set up the Prometheus reader ([`Telemetry::metrics_service`] answers 404).
    pub fn without_prometheus(mut self) -> Self {
        self.prometheus = false;
        self
    }

    /// Does not install a global `tracing` subscriber (add [`JsonLayer`] to yours).
    pub fn without_logs(mut self) -> Self {
        self.logs = false;
        self
    }

    /// The log filter used when `RUST_LOG` is not set (default `info`).
    pub fn log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = Some(filter.into());
        self
    }

    /// Writes JSON log lines to `make_writer` instead of standard output.
    pub fn log_writer<W>(mut self, make_writer: W) -> Self
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        self.log_writer = Some(BoxMakeWriter::new(make_writer));
        self
    }

    /// Exports metrics over OTLP every `interval` (default: `OTEL_METRIC_EXPORT_INTERVAL`,
    /// else 60 s).
    pub fn metric_export_interval(mut self, interval: Duration) -> Self {
        self.metric_interval = Some(interval);
        self
    }

    /// Field names whose values the JSON logs redact (default: the sensitive headers).
    pub fn sensitive_fields(mut self, sensitive: SensitiveHeaders) -> Self {
        self.sensitive = sensitive;
        self
    }

    /// Propagates with `propagator` instead of W3C trace context + baggage (tracewire's own
    /// [`W3cPropagator`](tracewire_core::w3c::W3cPropagator)).
    pub fn propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.propagator = Some(Box::new(propagator));
        self
    }

    /// The key of the keyed hash written for `#[event(pii = "hash")]` fields (default: the
    /// `TRACEWIRE_PII_HASH_KEY` variable; without a key, hashed fields are redacted).
    pub fn pii_hash_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.pii_hash_key = Some(key.as_ref().to_vec());
        self
    }

    /// Sends every `tracing` event passing the log filter as an OTLP log record too (default:
    /// `OTEL_LOGS_EXPORTER=otlp`), beside the JSON lines.
    pub fn otlp_logs(mut self, enabled: bool) -> Self {
        self.otlp_logs = Some(enabled);
        self
    }

    /// Turns users' `tracing` spans (`#[tracing::instrument]`, `info_span!`) into
    /// OpenTelemetry spans of the current trace (default: `TRACEWIRE_TRACING_SPANS=true`).
    /// See [`tracewire_core::bridge`].
    pub fn tracing_spans(mut self, enabled: bool) -> Self {
        self.tracing_spans = Some(enabled);
        self
    }

    /// Which measurements may become exemplars (default: `OTEL_METRICS_EXEMPLAR_FILTER`, else
    /// `trace_based`); read back with [`crate::config::exemplar_filter`].
    pub fn exemplar_filter(mut self, filter: crate::config::ExemplarFilter) -> Self {
        self.exemplar_filter = Some(filter);
        self
    }

    /// The longest [`Telemetry::flush`], [`Telemetry::shutdown`] and dropping the guard may
    /// take, whatever the collector does (default 5 s). What is still queued then is dropped
    /// and counted.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many ended spans may wait for export (default: `OTEL_BSP_MAX_QUEUE_SIZE`, else
    /// 2048). Spans ending while the queue is full are dropped and counted.
    pub fn span_queue_size(mut self, spans: usize) -> Self {
        self.span_queue_size = Some(spans.max(1));
        self
    }

    /// Log events each callsite may write per second (default: `TRACEWIRE_LOG_RATE_LIMIT`,
    /// else 100; 0 turns the limit off). Suppressed events are counted
    /// (`tracewire.telemetry.dropped{signal="logs", reason="rate_limited"}`) and summarised in
    /// one line per callsite and second.
    pub fn log_rate_limit(mut self, per_second: u64) -> Self {
        self.log_rate_limit = Some(per_second);
        self
    }

    /// Applies the log rate limit to the access log too (default: every request keeps its
    /// access-log line).
    pub fn rate_limit_access_log(mut self, limited: bool) -> Self {
        self.rate_limit_access_log = limited;
        self
    }

    /// The most attribute sets (series) one metric keeps per collection (default 2000).
    /// Measurements with further attribute sets are added to one series labelled
    /// `otel.metric.overflow=true` instead of growing memory. tracewire's own instruments
    /// stay far below it whatever clients send: methods outside the standard set are
    /// `_OTHER`, routes are the router's templates.
    pub fn metric_cardinality_limit(mut self, series: usize) -> Self {
        self.cardinality_limit = series.max(1);
        self
    }

    /// Builds the pipeline and installs it globally.
    pub fn init(self) -> Result<Telemetry, InitError> {
        use crate::config::{self, ProcessEnv};
        use crate::exporter::{Signal as ExportSignal, Transport};
        let env = ProcessEnv;
        let sdk_disabled = config::sdk_disabled(&env)?;
        config::check_sdk_numbers(&env)?;
        let limits = config::limits(&env)?;
        config::set_exemplar_filter(match self.exemplar_filter {
            Some(filter) => filter,
            None => config::parse_exemplar_filter(&env)?,
        });
        let env_propagators = config::propagators(&env)?;
        let otlp_logs = !sdk_disabled
            && self.otlp
            && match self.otlp_logs {
                Some(on) => on,
                None => config::logs_exporter(&env)?,
            };
        let tracing_spans = !sdk_disabled
            && match self.tracing_spans {
                Some(on) => on,
                None => config::tracing_spans(&env)?,
            };
        let otlp = self.otlp && !sdk_disabled;
        let prometheus = self.prometheus && !sdk_disabled;

        let resource = crate::resource::build(
            self.service_name.as_deref(),
            self.service_version.as_deref(),
            &self.attributes,
        );

        let view = crate::view::View::new(&resource, &self.sensitive);
        let parent_based = match &self.sampler {
            Some(sampler) => matches!(sampler, Sampler::ParentBased(_)),
            None => env_nonempty("OTEL_TRACES_SAMPLER")
                .is_none_or(|s| s.trim().starts_with("parentbased_")),
        };
        let sampling = if sdk_disabled {
            None
        } else {
            self.sampling.resolve(self.sampler.is_some())?
        };
        let mut tracer_builder = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_span_limits(limits.span);
        if sdk_disabled {
            tracer_builder = tracer_builder.with_sampler(Sampler::AlwaysOff);
        } else if let Some(sampler) = self.sampler {
            tracer_builder = tracer_builder.with_sampler(sampler);
        }
        let otlp_traces = otlp && signal_enabled(self.otlp_endpoint.as_deref(), Signal::Traces);
        let mut queued_spans = None;
        let mut span_processor = None;
        if otlp_traces {
            let transport = Transport::resolve(
                &env,
                ExportSignal::Traces,
                self.otlp_endpoint.as_deref(),
                self.otlp_protocol,
            )?;
            let exporter = crate::exporter::span_exporter(&transport, limits.value_length)?;
            let (processor, queued) =
                crate::dropped::batch_processor(exporter, self.span_queue_size);
            span_processor = Some(processor);
            queued_spans = Some(queued);
        }
        tracer_builder = view.add_processor(tracer_builder);
        // Consistent ratio + tail decision in front of the batch processor (see `sampling`).
        let (tracer_builder, sampling_decisions) =
            crate::sampling::configure(tracer_builder, sampling.as_ref(), span_processor);
        let tracer_provider = tracer_builder.build();

        let cardinality_limit = self.cardinality_limit;
        let mut meter_builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_view(move |_: &opentelemetry_sdk::metrics::Instrument| {
                opentelemetry_sdk::metrics::Stream::builder()
                    .with_cardinality_limit(cardinality_limit)
                    .build()
                    .ok()
            });
        let otlp_metrics = otlp && signal_enabled(self.otlp_endpoint.as_deref(), Signal::Metrics);
        if otlp_metrics {
            let transport = Transport::resolve(
                &env,
                ExportSignal::Metrics,
                self.otlp_endpoint.as_deref(),
                self.otlp_protocol,
            )?;
            let exporter = crate::exporter::metric_exporter(&transport)?;
            let mut reader =
                PeriodicReader::builder(crate::dropped::CountingMetricExporter { inner: exporter });
            if let Some(interval) = self.metric_interval {
                reader = reader.with_interval(interval);
            }
            meter_builder = meter_builder.with_reader(reader.build());
        }
        let registry = if prometheus {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| InitError::Prometheus(e.to_string()))?;
            meter_builder = meter_builder.with_reader(exporter);
            Some(registry)
        } else {
            None
        };
        let meter_provider = meter_builder.build();

        let logger_provider = if otlp_logs && self.logs {
            let transport = Transport::resolve(
                &env,
                ExportSignal::Logs,
                self.otlp_endpoint.as_deref(),
                self.otlp_protocol,
            )?;
            let exporter = crate::exporter::log_exporter(&transport)?;
            Some(
                opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(exporter)
                    .build(),
            )
        } else {
            None
        };
        let otlp_log_layer = logger_provider.as_ref().map(crate::exporter::log_layer);
        let bridge_layer = tracing_spans.then(|| {
            use opentelemetry::trace::TracerProvider as _;
            let scope =
                opentelemetry::InstrumentationScope::builder(tracewire_core::bridge::SCOPE_NAME)
                    .with_version(tracewire_core::SCOPE_VERSION)
                    .build();
            tracewire_core::bridge::TracingBridge::with_tracer(global::BoxedTracer::new(Box::new(
                tracer_provider.tracer_with_scope(scope),
            )))
        });

        if self.logs {
            let filter = log_filter(self.log_filter.as_deref())?;
            let service_name = resource
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let rate_limit = match self.log_rate_limit {
                Some(limit) => limit,
                None => tracewire_core::logs::limit_from_env()
                    .map_err(|value| InitError::LogRateLimit { value })?
                    .unwrap_or(tracewire_core::logs::DEFAULT_RATE_LIMIT),
            };
            let layer = JsonLayer::new()
                .with_static_field("service.name", &service_name)
                .with_sensitive_fields(self.sensitive.clone())
                .with_rate_limit(rate_limit)
                .rate_limit_access_log(self.rate_limit_access_log);
            let result = match self.log_writer {
                Some(writer) => tracing_subscriber::registry()
                    .with(filter)
                    .with(bridge_layer)
                    .with(otlp_log_layer)
                    .with(layer.with_writer(writer))
                    .with(view.log_layer())
                    .try_init(),
                None => tracing_subscriber::registry()
                    .with(filter)
                    .with(bridge_layer)
                    .with(otlp_log_layer)
                    .with(layer)
                    .with(view.log_layer())
                    .try_init(),
            };
            result.map_err(|_| InitError::SubscriberAlreadySet)?;
        }

        match (self.propagator, env_propagators) {
            (Some(p), _) => {
                global::set_text_map_propagator(TextMapCompositePropagator::new(vec![p]))
            }
            (None, Some(list)) => {
                global::set_text_map_propagator(TextMapCompositePropagator::new(list))
            }
            (None, None) => {
                global::set_text_map_propagator(tracewire_core::w3c::W3cPropagator::new())
            }
        }
        // Installed so tracewire's instrumentation starts spans with the SDK's tracer directly.
        tracewire_core::provider::set_tracer_provider(tracer_provider.clone());
        global::set_meter_provider(meter_provider.clone());
        // With a parent-based sampler, `#[traced]` calls inside an unsampled trace need no span,
        // and a request under an unsampled parent no sampling attributes. Under the tail
        // decision, unsampled spans are recorded: children too.
        tracewire_core::provider::set_parent_based_sampler(
            parent_based && sampling_decisions.is_none(),
        );
        let sampling_counters = sampling_decisions.map(crate::sampling::counters);
        if let Some(key) = &self.pii_hash_key {
            tracewire_core::event::set_pii_hash_key(key);
        }

        let dropped = crate::dropped::instrument();

        Ok(Telemetry {
            tracer_provider,
            meter_provider,
            logger_provider,
            registry,
            resource,
            queued_spans,
            otlp_traces,
            otlp_metrics,
            _sampling: sampling_counters,
            _dropped: dropped,
            shutdown_timeout: self.shutdown_timeout,
            shut_down: false,
            view,
        })
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn endpoint_var(self) -> &'static str {
        match self {
            Signal::Traces => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            Signal::Metrics => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        }
    }

    fn exporter_var(self) -> &'static str {
        match self {
            Signal::Traces => "OTEL_TRACES_EXPORTER",
            Signal::Metrics => "OTEL_METRICS_EXPORTER",
        }
    }
}

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

fn signal_enabled(endpoint: Option<&str>, signal: Signal) -> bool {
    if env_nonempty(signal.exporter_var()).is_some_and(|v| v.trim() == "none") {
        return false;
    }
    endpoint.is_some()
        || env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env_nonempty(signal.endpoint_var()).is_some()
}

/// The OpenTelemetry crates log their own start-up at INFO: below WARN they stay quiet unless the
/// filter names them (`RUST_LOG=info,opentelemetry_sdk=debug`).
fn quiet_sdk(filter: &str) -> String {
    if filter.contains("opentelemetry") {
        return filter.to_owned();
    }
    format!("{filter},opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn")
}

fn log_filter(default: Option<&str>) -> Result<EnvFilter, InitError> {
    let (text, from_env) = match env_nonempty("RUST_LOG") {
        Some(v) => (v, true),
        None => (default.unwrap_or("info").to_owned(), false),
    };
    EnvFilter::builder()
        .parse(quiet_sdk(&text))
        .map_err(|e| InitError::LogFilter {
            filter: if from_env {
                format!("RUST_LOG={text}")
            } else {
                text.clone()
            },
            message: e.to_string(),
        })
}

/// The running pipeline. Dropping it (or calling [`Telemetry::shutdown`]) flushes pending
/// spans and metrics and shuts the exporters down.
///
/// Bind it for the life of the program (`let telemetry = tracewire::init()?;`): a guard that is
/// not bound is dropped at once, which shuts the pipeline down before anything is exported.
#[must_use = "dropping the guard shuts telemetry down at once: bind it, `let telemetry = tracewire::init()?;`"]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    logger_provider: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
    registry: Option<prometheus::Registry>,
    resource: Resource,
    queued_spans: Option<crate::dropped::InFlight>,
    otlp_traces: bool,
    otlp_metrics: bool,
    _sampling: Option<crate::sampling::Counters>,
    _dropped: opentelemetry::metrics::ObservableCounter<u64>,
    shutdown_timeout: Duration,
    shut_down: bool,
    #[cfg_attr(not(feature = "view"), allow(dead_code))]
    pub(crate) view: crate::view::View,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("resource", &self.resource)
            .field("otlp_traces", &self.otlp_traces)
            .field("otlp_metrics", &self.otlp_metrics)
            .field("prometheus", &self.registry.is_some())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// A tower service rendering the metrics in Prometheus text format, to mount at
    /// `/metrics`.
    pub fn metrics_service(&self) -> MetricsService {
        MetricsService::new(self.registry.clone())
    }

    /// The resource the pipeline reports under.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Whether traces / metrics are exported over OTLP.
    pub fn otlp_enabled(&self) -> (bool, bool) {
        (self.otlp_traces, self.otlp_metrics)
    }

    /// Spans dropped since the process started, for every reason (a full queue, a failed
    /// export, a shutdown that could not wait): the `signal=spans` part of
    /// `tracewire.telemetry.dropped`.
    pub fn dropped_spans(&self) -> u64 {
        tracewire_core::dropped::total(tracewire_core::dropped::Signal::Spans)
    }

    /// Spans waiting in the export queue now (handed over, not yet taken by the exporter).
    pub fn queued_spans(&self) -> usize {
        self.queued_spans.as_ref().map_or(0, |q| q.queued())
    }

    /// Exports everything pending now; blocks until the exporters answer, at most the
    /// [shutdown timeout](Builder::shutdown_timeout).
    pub fn flush(&self) {
        let _ = self.bounded(crate::shutdown::Op::Flush);
    }

    /// Flushes and shuts the pipeline down within the
    /// [shutdown timeout](Builder::shutdown_timeout) (default 5 s), whatever the collector
    /// does. The report (or the error, when time ran out or an exporter failed) says how much
    /// telemetry was dropped in all, including the spans still queued when time ran out.
    pub fn shutdown(mut self) -> Result<crate::ShutdownReport, crate::ShutdownError> {
        self.shut_down = true;
        self.bounded(crate::shutdown::Op::Shutdown)
    }

    fn bounded(
        &self,
        op: crate::shutdown::Op,
    ) -> Result<crate::ShutdownReport, crate::ShutdownError> {
        crate::shutdown::run(
            op,
            &self.tracer_provider,
            &self.meter_provider,
            self.logger_provider.as_ref(),
            self.queued_spans.as_ref(),
            self.shutdown_timeout,
        )
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if !self.shut_down {
            self.shut_down = true;
            if let Err(error) = self.bounded(crate::shutdown::Op::Shutdown) {
                tracing::warn!(target: "tracewire", %error, "telemetry shut down with losses");
            }
        }
    }
}

#[cfg(test)]
mod quiet_sdk_tests {
    use super::quiet_sdk;

    #[test]
    fn the_sdk_logs_at_warn_unless_the_filter_names_it() {
        assert_eq!(
            quiet_sdk("info"),
            "info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn"
        );
        assert_eq!(
            quiet_sdk("info,opentelemetry_sdk=debug"),
            "info,opentelemetry_sdk=debug"
        );
        assert!(super::log_filter(Some("debug")).is_ok());
    }
}
