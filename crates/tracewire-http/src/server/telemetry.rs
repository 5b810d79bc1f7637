//! What a server future needs to end a request: the configuration and the instruments every
//! clone of a [`ServerLayer`](super::ServerLayer) shares. The future and the body depend on
//! this module, never on the layer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{OnceLock, RwLock};

use http::HeaderName;
use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Histogram, ObservableUpDownCounter};
use opentelemetry_semantic_conventions::metric as semconv;
use tracewire_core::attributes as attr;
use tracewire_core::redact::SensitiveHeaders;

use crate::classify::SharedClassifier;
use crate::semconv::{METHOD_COUNT, method_value};

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) sensitive: SensitiveHeaders,
    pub(crate) recorded_headers: Vec<(HeaderName, opentelemetry::Key)>,
    pub(crate) request_id_header: HeaderName,
    pub(crate) access_log: bool,
    /// Request paths whose access-log line is left out (a metrics scrape route).
    pub(crate) quiet_paths: Vec<Box<str>>,
    pub(crate) https: bool,
    pub(crate) classifier: SharedClassifier,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sensitive: SensitiveHeaders::default(),
            recorded_headers: Vec::new(),
            request_id_header: HeaderName::from_static("x-request-id"),
            access_log: true,
            quiet_paths: Vec::new(),
            https: false,
            classifier: SharedClassifier::default(),
        }
    }
}

/// What every clone of a layer shares: the tracer, the instruments and the span-name cache.
pub(crate) struct Instruments {
    pub(crate) tracer: BoxedTracer,
    pub(crate) duration: Histogram<f64>,
    /// `rpc.server.call.duration`, for calls classified as gRPC.
    pub(crate) rpc_duration: Histogram<f64>,
    pub(crate) active: &'static ActiveRequests,
    pub(crate) names: RouteNames,
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instruments").finish_non_exhaustive()
    }
}

impl Instruments {
    /// Takes the tracer and the meter from the global providers, now.
    pub(crate) fn from_globals() -> Self {
        let meter = tracewire_core::metrics::meter();
        Self {
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
        }
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
    pub(crate) fn get() -> &'static ActiveRequests {
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
