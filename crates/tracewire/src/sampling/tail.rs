//! The tail decision: buffer the spans of traces the head did not keep until this process's
//! part of the trace has completely ended, then keep or drop the part whole.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::config::{Limits, Setup, allowed};
use super::exemplars;
use super::sampler::{Reason, take_reason};

/// The attribute synthetic requests' spans carry: the value of the synthetic baggage entry.
pub const SYNTHETIC_TYPE: &str = "user_agent.synthetic.type";

const SHARDS: usize = 16;
const SWEEP_EVERY: u64 = 256;

/// Decision reasons, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Error = 0,
    Slow = 1,
    Forced = 2,
    Ratio = 3,
    Rule = 4,
    Dropped = 5,
}

const DECISIONS: [&str; 6] = ["error", "slow", "forced", "ratio", "rule", "dropped"];
const LIMITS: [&str; 3] = ["traces", "spans", "wait"];

/// Counts of sampling decisions, one per part of a trace this process recorded, and of the
/// decisions a bound forced early. Read by the `tracewire.sampling.decisions` and
/// `tracewire.sampling.overflow` counters.
#[derive(Debug, Default)]
pub struct Decisions {
    decisions: [AtomicU64; 6],
    overflow: [AtomicU64; 3],
}

impl Decisions {
    /// How many trace parts were decided with `decision` (`error`, `slow`, `forced`, `ratio`,
    /// `rule`, `dropped`).
    pub fn count(&self, decision: &str) -> u64 {
        DECISIONS
            .iter()
            .position(|d| *d == decision)
            .map_or(0, |i| self.decisions[i].load(Ordering::Relaxed))
    }

    /// How many traces were decided early because of `limit` (`traces`, `spans`, `wait`).
    pub fn overflow(&self, limit: &str) -> u64 {
        LIMITS
            .iter()
            .position(|l| *l == limit)
            .map_or(0, |i| self.overflow[i].load(Ordering::Relaxed))
    }

    /// Every `(decision, count)`.
    pub fn decisions(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DECISIONS
            .iter()
            .zip(&self.decisions)
            .map(|(d, c)| (*d, c.load(Ordering::Relaxed)))
    }

    /// Every `(limit, count)` of early decisions.
    pub fn overflows(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LIMITS
            .iter()
            .zip(&self.overflow)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
    }

    fn add(&self, why: Why) {
        self.decisions[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn add_overflow(&self, limit: usize) {
        self.overflow[limit].fetch_add(1, Ordering::Relaxed);
    }
}

struct Entry {
    open: u32,
    spans: Vec<SpanData>,
    started: Instant,
    error: bool,
    slow: bool,
    forced: bool,
    head: Option<Why>,
    decided: Option<bool>,
}

impl Entry {
    fn verdict(&self) -> Why {
        if self.error {
            Why::Error
        } else if self.slow {
            Why::Slow
        } else if self.forced {
            Why::Forced
        } else if let Some(head) = self.head {
            head
        } else {
            Why::Dropped
        }
    }

    /// Decides now; the kept spans go to `out`.
    fn decide(&mut self, decisions: &Decisions, out: &mut Vec<SpanData>) {
        let why = self.verdict();
        decisions.add(why);
        let keep = why != Why::Dropped;
        self.decided = Some(keep);
        if keep {
            out.append(&mut self.spans);
        } else {
            self.spans = Vec::new();
        }
    }
}

struct State {
    shards: Vec<Mutex<HashMap<TraceId, Entry>>>,
    in_flight: AtomicUsize,
    limits: Limits,
    slow: Duration,
    synthetic_key: String,
    breadcrumbs: Vec<String>,
    /// Sampled spans may join a pending trace (an `always` rule on an inner span).
    track_sampled: bool,
    decisions: Arc<Decisions>,
    ticks: AtomicU64,
}

impl State {
    fn shard(&self, trace_id: TraceId) -> MutexGuard<'_, HashMap<TraceId, Entry>> {
        let i = (u128::from_be_bytes(trace_id.to_bytes()) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A [`SpanProcessor`] that keeps whole trace parts: failing, slow and synthetic ones always,
/// the others as the head decision ([`ConsistentSampler`](super::ConsistentSampler)) said.
///
/// It counts the open spans of every trace the head did not keep (`on_start`/`on_end`),
/// buffers their ended spans, and decides when the count reaches zero: not when the local
/// root ends, so a span that outlives its root is neither lost from a kept trace nor leaked
/// from a dropped one. Spans the head kept pass straight through. Kept spans are forwarded to
/// `next` (normally the batch processor) flagged sampled; kept server, client, messaging and
/// `#[traced]` spans write the exemplars of their duration histograms.
pub struct TailProcessor<P> {
    next: P,
    state: Arc<State>,
}

impl<P: fmt::Debug> fmt::Debug for TailProcessor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailProcessor")
            .field("next", &self.next)
            .field("in_flight", &self.state.in_flight.load(Ordering::Relaxed))
            .field("limits", &self.state.limits)
            .field("slow", &self.state.slow)
            .finish_non_exhaustive()
    }
}

impl<P: SpanProcessor> TailProcessor<P> {
    /// Keeps traces whose local root lasted at least `slow`, failing and synthetic traces,
    /// and what the head kept; forwards them to `next`.
    pub fn new(next: P, slow: Duration) -> Self {
        Self::build(
            next,
            slow,
            Limits::default(),
            "synthetic".to_owned(),
            Vec::new(),
            false,
        )
    }

    /// With other bounds than [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.limits = limits;
        }
        self
    }

    pub(crate) fn from_setup(next: P, setup: &Setup) -> Self {
        Self::build(
            next,
            setup.slow,
            setup.limits,
            setup.synthetic_key.clone(),
            setup.breadcrumbs.clone(),
            setup
                .rules
                .iter()
                .any(|r| r.action() == super::Action::Always),
        )
    }

    fn build(
        next: P,
        slow: Duration,
        limits: Limits,
        synthetic_key: String,
        breadcrumbs: Vec<String>,
        track_sampled: bool,
    ) -> Self {
        Self {
            next,
            state: Arc::new(State {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                in_flight: AtomicUsize::new(0),
                limits,
                slow,
                synthetic_key,
                breadcrumbs,
                track_sampled,
                decisions: Arc::new(Decisions::default()),
                ticks: AtomicU64::new(0),
            }),
        }
    }

    /// The decision counts.
    pub fn decisions(&self) -> Arc<Decisions> {
        self.state.decisions.clone()
    }

    /// Traces waiting for their decision.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    fn forward(&self, spans: Vec<SpanData>) {
        for mut span in spans {
            if !span.span_context.is_sampled() {
                let sc = &span.span_context;
                span.span_context = SpanContext::new(
                    sc.trace_id(),
                    sc.span_id(),
                    sc.trace_flags().with_sampled(true),
                    sc.is_remote(),
                    sc.trace_state().clone(),
                );
            }
            exemplars::offer(&span);
            self.next.on_end(span);
        }
    }

    /// Decides the traces of one shard that waited longer than the limit.
    fn sweep(&self, shard: usize) {
        let state = &*self.state;
        let mut out = Vec::new();
        {
            let mut map = state.shards[shard]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for entry in map.values_mut() {
                if entry.decided.is_none() && entry.started.elapsed() >= state.limits.max_wait {
                    state.decisions.add_overflow(2);
                    entry.decide(&state.decisions, &mut out);
                }
            }
        }
        self.forward(out);
    }

    /// Copies the synthetic marker and the allow-listed baggage onto `span`; whether the
    /// request is synthetic.
    fn breadcrumbs(&self, span: &mut Span, cx: &Context) -> bool {
        let state = &*self.state;
        let baggage = cx.baggage();
        if baggage.is_empty() {
            return false;
        }
        let mut forced = false;
        if !state.synthetic_key.is_empty()
            && let Some(value) = baggage.get(state.synthetic_key.as_str())
        {
            span.set_attribute(KeyValue::new(SYNTHETIC_TYPE, value.as_str().to_owned()));
            forced = true;
        }
        if !state.breadcrumbs.is_empty() {
            for (key, (value, _)) in baggage.iter() {
                if allowed(&state.breadcrumbs, key.as_str()) {
                    span.set_attribute(KeyValue::new(key.clone(), value.as_str().to_owned()));
                }
            }
        }
        forced
    }
}

impl<P: SpanProcessor> SpanProcessor for TailProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let state = &*self.state;
        let (trace_id, sampled) = {
            let sc = span.span_context();
            (sc.trace_id(), sc.is_sampled())
        };
        let reason = take_reason(trace_id);
        let local_root = {
            let parent = cx.span();
            let psc = parent.span_context();
            !(psc.is_valid() && !psc.is_remote() && psc.trace_id() == trace_id)
        };
        let forced = self.breadcrumbs(span, cx);
        self.next.on_start(span, cx);

        if sampled {
            if local_root {
                state.decisions.add(match reason {
                    Some(Reason::Rule) => Why::Rule,
                    Some(Reason::Forced) => Why::Forced,
                    _ => Why::Ratio,
                });
            }
            if state.track_sampled
                && let Some(entry) = state.shard(trace_id).get_mut(&trace_id)
            {
                entry.open += 1;
                entry.head.get_or_insert(Why::Rule);
            }
            return;
        }

        {
            let mut map = state.shard(trace_id);
            match map.get_mut(&trace_id) {
                Some(entry) => {
                    entry.open += 1;
                    entry.forced |= forced;
                }
                None => {
                    if state.in_flight.load(Ordering::Relaxed) >= state.limits.max_traces {
                        // No room to wait for this trace: decided now, by the head (dropped).
                        if local_root {
                            state.decisions.add_overflow(0);
                            state.decisions.add(Why::Dropped);
                        }
                    } else {
                        state.in_flight.fetch_add(1, Ordering::Relaxed);
                        map.insert(
                            trace_id,
                            Entry {
                                open: 1,
                                spans: Vec::new(),
                                started: Instant::now(),
                                error: false,
                                slow: false,
                                forced,
                                head: None,
                                decided: None,
                            },
                        );
                    }
                }
            }
        }
        let tick = state.ticks.fetch_add(1, Ordering::Relaxed);
        if tick.is_multiple_of(SWEEP_EVERY) {
            self.sweep(((tick / SWEEP_EVERY) as usize) % SHARDS);
        }
    }

    fn on_end(&self, span: SpanData) {
        let state = &*self.state;
        let sampled = span.span_context.is_sampled();
        if sampled && !state.track_sampled {
            exemplars::offer(&span);
            self.next.on_end(span);
            return;
        }
        let trace_id = span.span_context.trace_id();
        let mut out = Vec::new();
        {
            let mut map = state.shard(trace_id);
            let Some(entry) = map.get_mut(&trace_id) else {
                drop(map);
                if sampled {
                    exemplars::offer(&span);
                    self.next.on_end(span);
                }
                // Otherwise its trace found the buffer full and was dropped when it started.
                return;
            };
            entry.open = entry.open.saturating_sub(1);
            if matches!(span.status, Status::Error { .. }) {
                entry.error = true;
            }
            let local_root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
            if local_root
                && span
                    .end_time
                    .duration_since(span.start_time)
                    .is_ok_and(|d| d >= state.slow)
            {
                entry.slow = true;
            }
            if sampled {
                entry.head.get_or_insert(Why::Rule);
            }
            match entry.decided {
                Some(true) => out.push(span),
                Some(false) => drop(span),
                None => {
                    entry.spans.push(span);
                    if entry.spans.len() >= state.limits.max_spans_per_trace {
                        state.decisions.add_overflow(1);
                        entry.decide(&state.decisions, &mut out);
                    } else if entry.started.elapsed() >= state.limits.max_wait {
                        state.decisions.add_overflow(2);
                        entry.decide(&state.decisions, &mut out);
                    }
                }
            }
            if entry.open == 0
                && let Some(mut entry) = map.remove(&trace_id)
            {
                state.in_flight.fetch_sub(1, Ordering::Relaxed);
                if entry.decided.is_none() {
                    entry.decide(&state.decisions, &mut out);
                }
            }
        }
        self.forward(out);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Traces still open are decided with what is known.
        let state = &*self.state;
        let mut out = Vec::new();
        for shard in &state.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (_, mut entry) in map.drain() {
                state.in_flight.fetch_sub(1, Ordering::Relaxed);
                if entry.decided.is_none() {
                    entry.decide(&state.decisions, &mut out);
                }
            }
        }
        self.forward(out);
        self.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}
