//! The head decision: consistent ratio, rules, parent, synthetic requests.

use std::cell::Cell;
use std::sync::Arc;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

use super::config::{Action, Rule, Setup};
use super::consistent;

/// Why the head decision kept a trace (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The ratio (or a sampled upstream parent) kept it.
    Ratio,
    /// A rule kept it.
    Rule,
    /// Synthetic baggage forced it.
    Forced,
    /// Not kept at the head: the tail decides.
    Pending,
    /// A span inside a trace: follows its parent.
    Inherited,
}

thread_local! {
    /// The last head decision on this thread, read back by the tail processor's `on_start`
    /// (the SDK calls the sampler and then `on_start` on the same thread, for the same span).
    static LAST: Cell<Option<(TraceId, Reason)>> = const { Cell::new(None) };
}

/// The reason of the head decision just taken on this thread for `trace_id`.
pub(crate) fn take_reason(trace_id: TraceId) -> Option<Reason> {
    LAST.with(|last| match last.take() {
        Some((id, reason)) if id == trace_id => Some(reason),
        _ => None,
    })
}

#[derive(Debug)]
struct Inner {
    threshold: Option<u64>,
    th: Option<String>,
    rules: Vec<(Rule, Option<u64>, Option<String>)>,
    has_always: bool,
    parent_based: bool,
    synthetic_key: String,
    /// Spans not kept at the head are recorded for the tail decision (otherwise dropped).
    tail: bool,
}

/// OpenTelemetry consistent probability sampling with tracewire's rules.
///
/// For a span that starts this process's part of a trace: a request whose baggage carries
/// the synthetic key is kept; a sampled remote parent is honoured (parent-based, unless
/// disabled); the first matching [`Rule`] decides; an unsampled remote parent is honoured;
/// otherwise the ratio decides from the trace id's randomness. Kept spans carry the rejection
/// threshold in `tracestate` (`ot=th:…`). A span inside a trace follows its parent, except
/// that an [`Action::Always`] rule keeps the trace.
///
/// With the tail decision on, spans not kept here are still recorded (`RecordOnly`), so the
/// [`TailProcessor`](super::TailProcessor) can keep failing and slow traces.
#[derive(Debug, Clone)]
pub struct ConsistentSampler {
    inner: Arc<Inner>,
}

impl ConsistentSampler {
    /// A sampler keeping `ratio` of ordinary traces, with `rules`, parent-based.
    /// `tail` records the spans it does not keep, for a [`TailProcessor`](super::TailProcessor).
    pub fn new(ratio: f64, rules: Vec<Rule>, tail: bool) -> Self {
        Self::build(ratio, rules, true, "synthetic".to_owned(), tail)
    }

    pub(crate) fn from_setup(setup: &Setup, tail: bool) -> Self {
        Self::build(
            setup.ratio,
            setup.rules.clone(),
            setup.parent_based,
            setup.synthetic_key.clone(),
            tail,
        )
    }

    fn build(
        ratio: f64,
        rules: Vec<Rule>,
        parent_based: bool,
        synthetic_key: String,
        tail: bool,
    ) -> Self {
        let threshold = consistent::threshold(ratio);
        let has_always = rules.iter().any(|r| r.action() == Action::Always);
        let rules = rules
            .into_iter()
            .map(|rule| {
                let t = match rule.action() {
                    Action::Always => Some(0),
                    Action::Never => None,
                    Action::Ratio(r) => consistent::threshold(r),
                };
                (rule, t, t.map(consistent::encode_threshold))
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                threshold,
                th: threshold.map(consistent::encode_threshold),
                rules,
                has_always,
                parent_based,
                synthetic_key,
                tail,
            }),
        }
    }

    fn not_kept(&self, trace_state: &TraceState) -> SamplingDecision {
        let _ = trace_state;
        if self.inner.tail {
            SamplingDecision::RecordOnly
        } else {
            SamplingDecision::Drop
        }
    }
}

fn result(decision: SamplingDecision, trace_state: TraceState) -> SamplingResult {
    SamplingResult {
        decision,
        attributes: Vec::new(),
        trace_state,
    }
}

fn remember(trace_id: TraceId, reason: Reason) {
    LAST.with(|last| last.set(Some((trace_id, reason))));
}

impl ShouldSample for ConsistentSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let inner = &*self.inner;
        let empty = Context::new();
        let cx = parent_context.unwrap_or(&empty);
        let parent = cx.span();
        let psc = parent.span_context();
        let valid = psc.is_valid() && psc.trace_id() == trace_id;
        let parent_state = if valid {
            psc.trace_state().clone()
        } else {
            TraceState::NONE
        };

        if valid && !psc.is_remote() {
            // Inside this process's part of a trace: follow the parent…
            if psc.is_sampled() {
                remember(trace_id, Reason::Inherited);
                return result(SamplingDecision::RecordAndSample, parent_state);
            }
            // …unless an `always` rule keeps the trace from here on.
            if inner.has_always
                && inner.rules.iter().any(|(rule, _, _)| {
                    rule.action() == Action::Always && rule.matches(name, span_kind, attributes)
                })
            {
                remember(trace_id, Reason::Rule);
                return result(
                    SamplingDecision::RecordAndSample,
                    consistent::with_threshold(&parent_state, None),
                );
            }
            remember(trace_id, Reason::Inherited);
            return result(self.not_kept(&parent_state), parent_state);
        }

        // This span starts this process's part of the trace.
        if !inner.synthetic_key.is_empty()
            && cx.baggage().get(inner.synthetic_key.as_str()).is_some()
        {
            remember(trace_id, Reason::Forced);
            return result(
                SamplingDecision::RecordAndSample,
                consistent::with_threshold(&parent_state, None),
            );
        }
        if valid && inner.parent_based && psc.is_sampled() {
            remember(trace_id, Reason::Ratio);
            return result(SamplingDecision::RecordAndSample, parent_state);
        }
        let randomness = || consistent::randomness(trace_id, &parent_state);
        if let Some((_, threshold, th)) = inner
            .rules
            .iter()
            .find(|(rule, _, _)| rule.matches(name, span_kind, attributes))
        {
            if consistent::keeps(*threshold, randomness()) {
                remember(trace_id, Reason::Rule);
                return result(
                    SamplingDecision::RecordAndSample,
                    consistent::with_threshold(&parent_state, th.as_deref()),
                );
            }
            remember(trace_id, Reason::Pending);
            let state = consistent::with_threshold(&parent_state, None);
            return result(self.not_kept(&state), state);
        }
        if valid && inner.parent_based {
            // An unsampled upstream parent.
            remember(trace_id, Reason::Pending);
            return result(self.not_kept(&parent_state), parent_state);
        }
        if consistent::keeps(inner.threshold, randomness()) {
            remember(trace_id, Reason::Ratio);
            return result(
                SamplingDecision::RecordAndSample,
                consistent::with_threshold(&parent_state, inner.th.as_deref()),
            );
        }
        remember(trace_id, Reason::Pending);
        let state = consistent::with_threshold(&parent_state, None);
        result(self.not_kept(&state), state)
    }
}
