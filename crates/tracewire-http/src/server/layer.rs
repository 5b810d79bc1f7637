use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::HeaderName;
use opentelemetry::global::BoxedTracer;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, ObservableUpDownCounter};
use tracewire_core::attributes as attr;

use crate::semconv::{METHOD_COUNT, method_value};
use opentelemetry_semantic_conventions::metric as semconv;
use tower::Layer;
use tracewire_core::redact::SensitiveHeaders;

use crate::classify::{Classify, DefaultClassifier, GrpcClassifier};

use super::service::Server;

/// A tower [`Layer`] that instruments every request of the service it wraps. See the
/// [module documentation](super) for what it records.
///
/// Build it after `tracewire::init()`: the tracer and the instruments are taken from the global
/// providers once, here, not per request.
#[derive(Debug, Clone)]
pub struct ServerLayer {
    pub(crate) config: Arc<Config>,
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) sensitive: SensitiveHeaders,
    pub(crate) recorded_headers: Vec<(HeaderName, opentelemetry::Key)>,
    pub(crate) request_id_header: HeaderName,
    pub(crate) access_log: bool,
    pub(crate) https: bool,
    pub(crate) classifier: Arc<dyn Classify>,
}

/// What every clone of a layer shares: the tracer, the instruments and the span-name cache.
pub(crate) struct Shared {
    pub(crate) tracer: BoxedTracer,
    pub(crate) duration: Histogram<f64>,
    /// `rpc.server.call.duration`, for calls classified as gRPC.
    pub(crate) rpc_duration: Histogram<f64>,
    pub(crate) active: &'static ActiveRequests,
    pub(crate) names: RouteNames,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Default for ServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerLayer {
    /// A layer with the default configuration: sensitive headers redacted, access log on,
    /// `x-request-id` as the request-id header, no request headers recorded.
    pub fn new() -> Self {
        let meter = tracewire_core::metrics::meter();
        let shared = Shared {
            tracer: tracewire_core::tracer(),
            duration: tracewire_core::metrics::duration_histogram(
                &meter,
                semconv::HTTP_SERVER_REQUEST_DURATION,
                "Duration of HTTP server requests.",
            ),
            rpc_duration: tracewire_core::metrics::duration_histogram(
                &meter,
                semconv::RPC_SERVER_CALL_DURATION,
                "Duration of incoming RPCs.",
            ),
            active: ActiveRequests::get(),
            names: RouteNames::default(),
        };
        Self {
            config: Arc::new(Config {
                sensitive: SensitiveHeaders::default(),
                recorded_headers: Vec::new(),
                request_id_header: HeaderName::from_static("x-request-id"),
                access_log: true,
                https: false,
                classifier: Arc::new(DefaultClassifier),
            }),
            shared: Arc::new(shared),
        }
    }

    /// Records the value of request header `name` as the span attribute
    /// `http.request.header.<name>` (redacted when the header is sensitive). Names are
    /// case-insensitive; a name that is not a valid header name is ignored with a warning.
    ///
    /// ```
    /// let layer = tracewire_http::ServerLayer::new().record_request_header("X-Tenant");
    /// ```
    pub fn record_request_header(mut self, name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(header) => {
                let key = opentelemetry::Key::from(format!("http.request.header.{lower}"));
                Arc::make_mut(&mut self.config)
                    .recorded_headers
                    .push((header, key));
            }
            Err(_) => {
                tracing::warn!(header = name, "not a valid header name: not recorded");
            }
        }
        self
    }

    /// Replaces the list of headers whose values are never recorded.
    pub fn sensitive_headers(mut self, sensitive: SensitiveHeaders) -> Self {
        Arc::make_mut(&mut self.config).sensitive = sensitive;
        self
    }

    /// Turns the per-request access-log event on or off (on by default).
    pub fn access_log(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.config).access_log = enabled;
        self
    }

    /// Uses another header than `x-request-id` for the request id.
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).request_id_header = name;
        self
    }

    /// A layer recording every request as a gRPC call: the same as
    /// `ServerLayer::new().classifier(GrpcClassifier::new())`. [`ServerLayer::new`] already
    /// records requests with a gRPC content type as gRPC calls.
    pub fn new_for_grpc() -> Self {
        Self::new().classifier(GrpcClassifier)
    }

    /// Chooses how requests are recorded and judged (see [`crate::classify`]); the
    /// [`DefaultClassifier`] by default.
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        Arc::make_mut(&mut self.config).classifier = Arc::new(classifier);
        self
    }

    /// Records `url.scheme = https` when the request URI carries no scheme (HTTP/1 requests
    /// do not): set it on a TLS listener or behind a TLS-terminating proxy. `http` otherwise.
    pub fn https(mut self, https: bool) -> Self {
        Arc::make_mut(&mut self.config).https = https;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Server::new(inner, self.clone())
    }
}

/// `http.server.active_requests`, per method and scheme, for the whole process.
///
/// The request path pays one atomic add each way; the SDK reads the counts only when metrics
/// are collected, through an observable up-down counter. The exported data is that of an
/// up-down counter, without two attribute-hashing measurements per request.
pub(crate) struct ActiveRequests {
    slots: [[Slot; 2]; METHOD_COUNT],
}

struct Slot {
    active: AtomicI64,
    /// Set once a request was seen, so combinations never used stay out of the export.
    seen: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            active: AtomicI64::new(0),
            seen: AtomicBool::new(false),
        }
    }
}

static ACTIVE: ActiveRequests = ActiveRequests {
    slots: [const { [const { Slot::new() }; 2] }; METHOD_COUNT],
};

impl ActiveRequests {
    /// The process-wide counts; the first call registers them with the global meter provider.
    fn get() -> &'static ActiveRequests {
        static INSTRUMENT: OnceLock<ObservableUpDownCounter<i64>> = OnceLock::new();
        INSTRUMENT.get_or_init(|| {
            tracewire_core::metrics::meter()
                .i64_observable_up_down_counter(semconv::HTTP_SERVER_ACTIVE_REQUESTS)
                .with_unit("{request}")
                .with_description("Number of active HTTP server requests.")
                .with_callback(|observer| {
                    for (method, by_scheme) in ACTIVE.slots.iter().enumerate() {
                        for (https, slot) in by_scheme.iter().enumerate() {
                            if slot.seen.load(Ordering::Relaxed) {
                                observer.observe(
                                    slot.active.load(Ordering::Relaxed),
                                    &[
                                        KeyValue::new(
                                            attr::HTTP_REQUEST_METHOD,
                                            method_value(method),
                                        ),
                                        KeyValue::new(attr::URL_SCHEME, scheme(https == 1)),
                                    ],
                                );
                            }
                        }
                    }
                })
                .build()
        });
        &ACTIVE
    }

    pub(crate) fn start(&self, method: usize, https: bool) {
        let slot = &self.slots[method][usize::from(https)];
        if !slot.seen.load(Ordering::Relaxed) {
            slot.seen.store(true, Ordering::Relaxed);
        }
        slot.active.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self, method: usize, https: bool) {
        self.slots[method][usize::from(https)]
            .active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `url.scheme` value.
pub(crate) fn scheme(https: bool) -> &'static str {
    if https { "https" } else { "http" }
}

/// Span names and route values per (method, route), computed once and reused.
///
/// Routes are templates (`/users/{id}`), a small fixed set, so each distinct route and
/// `"{method} {route}"` pair is leaked once into a `&'static str`, then shared by every request
/// without allocation. The cache is bounded: past [`RouteNames::LIMIT`] routes, names are built
/// per request instead.
#[derive(Default)]
pub(crate) struct RouteNames {
    map: RwLock<HashMap<Box<str>, RouteEntry>>,
}

#[derive(Clone, Copy)]
struct RouteEntry {
    route: &'static str,
    names: [Option<&'static str>; METHOD_COUNT],
}

/// A route and a span name, static when cached.
pub(crate) struct Named {
    pub(crate) route: Cow<'static, str>,
    pub(crate) span_name: Cow<'static, str>,
}

impl RouteNames {
    const LIMIT: usize = 4096;

    pub(crate) fn get(&self, method_idx: usize, method: &'static str, route: &str) -> Named {
        if let Ok(map) = self.map.read()
            && let Some(entry) = map.get(route)
            && let Some(name) = entry.names[method_idx]
        {
            return Named {
                route: Cow::Borrowed(entry.route),
                span_name: Cow::Borrowed(name),
            };
        }
        self.insert(method_idx, method, route)
    }

    #[cold]
    fn insert(&self, method_idx: usize, method: &'static str, route: &str) -> Named {
        let name = format!("{method} {route}");
        let Ok(mut map) = self.map.write() else {
            return Named {
                route: Cow::Owned(route.to_owned()),
                span_name: Cow::Owned(name),
            };
        };
        if map.len() >= Self::LIMIT && !map.contains_key(route) {
            return Named {
                route: Cow::Owned(route.to_owned()),
                span_name: Cow::Owned(name),
            };
        }
        let entry = map.entry(Box::from(route)).or_insert_with(|| RouteEntry {
            route: Box::leak(Box::from(route)),
            names: [None; METHOD_COUNT],
        });
        let name: &'static str = match entry.names[method_idx] {
            Some(existing) => existing,
            None => {
                let leaked: &'static str = Box::leak(name.into_boxed_str());
                entry.names[method_idx] = Some(leaked);
                leaked
            }
        };
        Named {
            route: Cow::Borrowed(entry.route),
            span_name: Cow::Borrowed(name),
        }
    }
}
