//! What a server future needs to end a request: the configuration and the instruments every
//! clone of a [`ServerLayer`](super::ServerLayer) shares. The future and the body depend on
//! this module, never on the layer.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use http::HeaderName;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, ObservableUpDownCounter};
use opentelemetry_semantic_conventions::metric as semconv;
use tracewire_core::attributes as attr;
use tracewire_core::metrics::{BoundHistograms, Fnv, StripedCount};
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

/// What a layer, its services and every request they serve share: the configuration and the
/// instruments behind one reference count, so a request takes one reference, not two.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// Tells layers, and each configuration of one, apart in the threads' copies.
    id: u64,
    pub(crate) config: Config,
    pub(crate) instruments: Arc<Instruments>,
}

impl Shared {
    pub(crate) fn new(config: Config, instruments: Instruments) -> Self {
        Self {
            id: next_id(),
            config,
            instruments: Arc::new(instruments),
        }
    }

    /// The configuration, to change: it gets a new id, so no thread's copy of the old one is
    /// taken for it.
    pub(crate) fn config_mut(self: &mut Arc<Self>) -> &mut Config {
        let shared = Arc::make_mut(self);
        shared.id = next_id();
        &mut shared.config
    }
}

fn next_id() -> u64 {
    static IDS: AtomicU64 = AtomicU64::new(0);
    IDS.fetch_add(1, Ordering::Relaxed)
}

/// Copies of [`Shared`] a thread keeps, the last ones it served.
const THREAD_COPIES: usize = 4;

thread_local! {
    static COPIES: RefCell<([Option<Arc<Shared>>; THREAD_COPIES], usize)> =
        const { RefCell::new(([const { None }; THREAD_COPIES], 0)) };
}

/// This thread's copy of `shared` (made on first use): what a service cloned for a request
/// holds, so the reference count that the request takes and drops is the thread's own.
///
/// axum clones a route's service for every request, and the request's measure holds the
/// shared state until the response ends: with one `Arc` for all, every worker thread updated
/// the same count four times a request. Each thread keeps copies of the last
/// [`THREAD_COPIES`] layers it served; a dropped layer's copies are freed as newer ones take
/// their place, or when the thread exits.
pub(crate) fn thread_copy(shared: &Arc<Shared>) -> Arc<Shared> {
    COPIES
        .try_with(|copies| {
            let Ok(mut copies) = copies.try_borrow_mut() else {
                return shared.clone();
            };
            let (slots, next) = &mut *copies;
            if let Some(copy) = slots.iter().flatten().find(|copy| copy.id == shared.id) {
                return copy.clone();
            }
            let copy = Arc::new(Shared::clone(shared));
            slots[*next] = Some(copy.clone());
            *next = (*next + 1) % THREAD_COPIES;
            copy
        })
        .unwrap_or_else(|_| shared.clone())
}

/// What every clone of a layer shares: the tracer, the instruments and the span-name cache.
pub(crate) struct Instruments {
    pub(crate) tracer: tracewire_core::provider::Tracer,
    pub(crate) duration: Histogram<f64>,
    /// `http.server.request.duration` of requests without a matched route, per method.
    pub(crate) unrouted: [Durations; METHOD_COUNT],
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
        // The routes' durations are recorded through per-thread buffers: this provider's
        // collections replay them first.
        tracewire_core::metrics::flush_on_collect(&meter);
        let duration = tracewire_core::metrics::duration_histogram(
            &meter,
            semconv::HTTP_SERVER_REQUEST_DURATION,
            "Duration of HTTP server requests.",
        );
        Self {
            tracer: tracewire_core::provider::tracer(),
            unrouted: std::array::from_fn(|_| BoundHistograms::new(duration.clone())),
            names: RouteNames::new(duration.clone()),
            duration,
            rpc_duration: tracewire_core::metrics::duration_histogram(
                &meter,
                semconv::RPC_SERVER_CALL_DURATION,
                "Duration of incoming RPCs.",
            ),
            active: ActiveRequests::get(),
        }
    }
}

/// `http.server.active_requests`, per method and scheme, for the whole process.
///
/// The request path pays one atomic add each way; the SDK reads the counts only when metrics
/// are collected, through an observable up-down counter. The exported data is that of an
/// up-down counter, without two attribute-hashing measurements per request. Each count is a
/// [`StripedCount`], so worker threads do not pass one cache line back and forth.
pub(crate) struct ActiveRequests {
    slots: [[Slot; 2]; METHOD_COUNT],
}

struct Slot {
    active: StripedCount,
    /// Set once a request was seen, so combinations never used stay out of the export.
    seen: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            active: StripedCount::new(),
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
                                    slot.active.sum(),
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
        slot.active.add(1);
    }

    pub(crate) fn end(&self, method: usize, https: bool) {
        self.slots[method][usize::from(https)].active.add(-1);
    }
}

/// The `url.scheme` value.
pub(crate) fn scheme(https: bool) -> &'static str {
    if https { "https" } else { "http" }
}

/// `http.server.request.duration` of one (route, method), bound per scheme, status and
/// error type as they are first seen.
pub(crate) type Durations = BoundHistograms<DurationKey>;

/// What tells the attribute sets of one (route, method) apart.
pub(crate) struct DurationKey {
    pub(crate) https: bool,
    pub(crate) status: Option<u16>,
    pub(crate) error_type: Option<Box<str>>,
}

impl DurationKey {
    pub(crate) fn is(&self, https: bool, status: Option<u16>, error_type: Option<&str>) -> bool {
        self.https == https && self.status == status && self.error_type.as_deref() == error_type
    }
}

/// Span names, route values and bound duration histograms per (method, route), computed once
/// and reused.
///
/// Routes are templates (`/users/{id}`), a small fixed set, so each distinct route and
/// `"{method} {route}"` pair is leaked once into a `&'static str` (and its bound histograms with
/// it), then shared by every request without allocation or reference counting. The cache is
/// bounded: past [`RouteNames::LIMIT`] routes, names are built per request instead and
/// durations recorded unbound.
///
/// Each thread also remembers the routes it resolved last ([`RECENT`]), so a request of a route
/// its thread has seen takes no lock: worker threads serving the same routes then share no
/// cache line that any of them writes.
pub(crate) struct RouteNames {
    /// Tells this cache's entries apart in the threads' recent ones.
    id: u64,
    duration: Histogram<f64>,
    map: RwLock<HashMap<Box<str>, RouteEntry, BuildHasherDefault<Fnv>>>,
}

/// One resolved (route, method) of one [`RouteNames`].
#[derive(Clone, Copy)]
struct Recent {
    names: u64,
    method: usize,
    route: &'static str,
    span_name: &'static str,
    durations: &'static Durations,
}

const RECENT_SLOTS: usize = 8;

thread_local! {
    /// The (route, method) pairs this thread resolved last, by a hash of the route.
    static RECENT: [Cell<Option<Recent>>; RECENT_SLOTS] =
        const { [const { Cell::new(None) }; RECENT_SLOTS] };
}

/// The FNV-1a hash of `text`.
fn fnv(text: &str) -> u64 {
    let mut hasher = Fnv::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

struct RouteEntry {
    route: &'static str,
    names: [Option<(&'static str, &'static Durations)>; METHOD_COUNT],
}

/// A route and a span name, static when cached, with the route's bound durations.
pub(crate) struct Named {
    pub(crate) route: Cow<'static, str>,
    pub(crate) span_name: Cow<'static, str>,
    pub(crate) durations: Option<&'static Durations>,
}

impl RouteNames {
    const LIMIT: usize = 4096;

    fn new(duration: Histogram<f64>) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            duration,
            map: RwLock::default(),
        }
    }

    pub(crate) fn get(&self, method_idx: usize, method: &'static str, route: &str) -> Named {
        let slot = (fnv(route) % RECENT_SLOTS as u64) as usize;
        let recent = RECENT.with(|recent| recent[slot].get());
        if let Some(hit) = recent
            && hit.names == self.id
            && hit.method == method_idx
            && hit.route == route
        {
            return Named {
                route: Cow::Borrowed(hit.route),
                span_name: Cow::Borrowed(hit.span_name),
                durations: Some(hit.durations),
            };
        }
        let found = self.map.read().ok().and_then(|map| {
            let entry = map.get(route)?;
            let (span_name, durations) = entry.names[method_idx]?;
            Some(Recent {
                names: self.id,
                method: method_idx,
                route: entry.route,
                span_name,
                durations,
            })
        });
        let Some(found) = found else {
            return self.insert(method_idx, method, route);
        };
        RECENT.with(|recent| recent[slot].set(Some(found)));
        Named {
            route: Cow::Borrowed(found.route),
            span_name: Cow::Borrowed(found.span_name),
            durations: Some(found.durations),
        }
    }

    #[cold]
    fn insert(&self, method_idx: usize, method: &'static str, route: &str) -> Named {
        let name = format!("{method} {route}");
        let Ok(mut map) = self.map.write() else {
            return Named {
                route: Cow::Owned(route.to_owned()),
                span_name: Cow::Owned(name),
                durations: None,
            };
        };
        if map.len() >= Self::LIMIT && !map.contains_key(route) {
            return Named {
                route: Cow::Owned(route.to_owned()),
                span_name: Cow::Owned(name),
                durations: None,
            };
        }
        let entry = map.entry(Box::from(route)).or_insert_with(|| RouteEntry {
            route: Box::leak(Box::from(route)),
            names: [const { None }; METHOD_COUNT],
        });
        let (name, durations) = entry.names[method_idx].get_or_insert_with(|| {
            // Leaked with the names: a request then holds the route's histograms without a
            // reference count to update (an atomic write every worker thread would share).
            let leaked: &'static str = Box::leak(name.into_boxed_str());
            let durations: &'static Durations =
                Box::leak(Box::new(BoundHistograms::new(self.duration.clone())));
            (leaked, durations)
        });
        Named {
            route: Cow::Borrowed(entry.route),
            span_name: Cow::Borrowed(name),
            durations: Some(durations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_copy_and_a_changed_configuration_is_never_taken_for_the_old() {
        let shared = Arc::new(Shared::new(Config::default(), Instruments::from_globals()));
        let here = thread_copy(&shared);
        assert!(!Arc::ptr_eq(&here, &shared), "a copy of the thread's own");
        assert!(Arc::ptr_eq(&thread_copy(&shared), &here), "made once");
        assert!(
            Arc::ptr_eq(&thread_copy(&here), &here),
            "a copy's copy is itself"
        );
        let there = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let copy = thread_copy(&shared);
                    (Arc::as_ptr(&copy) as usize, copy.config.access_log)
                })
                .join()
                .unwrap()
        });
        assert_ne!(there.0, Arc::as_ptr(&here) as usize);
        assert!(there.1);

        // The layer's builder changes a configuration a service already holds.
        let mut changed = shared.clone();
        changed.config_mut().access_log = false;
        assert!(!thread_copy(&changed).config.access_log);
        assert!(thread_copy(&shared).config.access_log);

        // Past the copies a thread keeps, the oldest makes way; every lookup stays right.
        let others: Vec<_> = (0..THREAD_COPIES)
            .map(|_| Arc::new(Shared::new(Config::default(), Instruments::from_globals())))
            .collect();
        for other in &others {
            assert_eq!(thread_copy(other).id, other.id);
        }
        let again = thread_copy(&shared);
        assert_eq!(again.id, shared.id);
        assert!(!Arc::ptr_eq(&again, &here), "made again after it made way");
    }
}
