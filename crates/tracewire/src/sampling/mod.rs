//! Keep what matters: consistent ratio sampling, rules, a tail decision per trace, exemplars
//! and baggage breadcrumbs.
//!
//! [`init`](crate::init) sets all of this up from configuration; the guide is
//! `docs/sampling.md`. In short:
//!
//! - every span is recorded; spans of a trace that the head decision (ratio, rule, a sampled
//!   parent, a synthetic request) did not keep are buffered by [`TailProcessor`] until this
//!   process's part of the trace has completely ended;
//! - the part is then exported whole if any span failed, if its local root lasted at least
//!   the slow threshold, or if the request was synthetic; otherwise it is dropped;
//! - kept traces write exemplars for the duration histograms; dropped traces never do.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TRACEWIRE_SAMPLING_RATIO` | fraction of ordinary traces kept, `0.0`–`1.0` | `1.0` |
//! | `TRACEWIRE_SAMPLING_SLOW` | a local root lasting this long is kept (`250ms`, `2s`) | `1s` |
//! | `TRACEWIRE_SAMPLING_RULES` | per span name / route / destination / function rules | none |
//! | `TRACEWIRE_SAMPLING_PARENT_BASED` | honour an incoming `traceparent` decision | `true` |
//! | `TRACEWIRE_SAMPLING_SYNTHETIC_KEY` | baggage key marking synthetic requests | `synthetic` |
//! | `TRACEWIRE_BAGGAGE_ATTRIBUTES` | baggage keys copied onto spans (`feature_flag.*,user.journey`) | none |

mod config;
mod consistent;
pub(crate) mod exemplars;
pub(crate) mod openmetrics;
pub(crate) mod otlp;
mod sampler;
mod tail;

pub use config::{Action, Limits, Rule};
pub use sampler::ConsistentSampler;
pub use tail::{Decisions, SYNTHETIC_TYPE, TailProcessor};

pub(crate) use config::{Options, Setup};

mod builder;

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableCounter;
use opentelemetry_sdk::trace::{SpanProcessor, TracerProviderBuilder};

/// Sets up the sampler, and with a processor exporting spans (the counted batch queue) the
/// tail processor in front of it; returns the decision counts to report.
pub(crate) fn configure<P: SpanProcessor + 'static>(
    builder: TracerProviderBuilder,
    setup: Option<&Setup>,
    next: Option<P>,
) -> (TracerProviderBuilder, Option<Arc<Decisions>>) {
    match (setup, next) {
        (Some(setup), Some(next)) => {
            let tail = TailProcessor::from_setup(next, setup);
            let decisions = tail.decisions();
            (
                builder
                    .with_sampler(ConsistentSampler::from_setup(setup, true))
                    .with_span_processor(tail),
                Some(decisions),
            )
        }
        (Some(setup), None) => (
            builder.with_sampler(ConsistentSampler::from_setup(setup, false)),
            None,
        ),
        (None, Some(next)) => (builder.with_span_processor(next), None),
        (None, None) => (builder, None),
    }
}

/// The observable counters reporting the decisions; keep them alive with the pipeline.
#[derive(Debug)]
pub(crate) struct Counters {
    _decisions: ObservableCounter<u64>,
    _overflow: ObservableCounter<u64>,
}

/// Registers `tracewire.sampling.decisions` and `tracewire.sampling.overflow` on the global
/// meter provider.
pub(crate) fn counters(decisions: Arc<Decisions>) -> Counters {
    let meter = tracewire_core::metrics::meter();
    let observed = decisions.clone();
    let decisions_counter = meter
        .u64_observable_counter("tracewire.sampling.decisions")
        .with_unit("{trace}")
        .with_description(
            "Trace parts decided by the sampler, by the reason they were kept or dropped",
        )
        .with_callback(move |o| {
            for (decision, count) in observed.decisions() {
                o.observe(count, &[KeyValue::new("decision", decision)]);
            }
        })
        .build();
    let overflow = meter
        .u64_observable_counter("tracewire.sampling.overflow")
        .with_unit("{trace}")
        .with_description("Traces decided early because a bound of the tail buffer was reached")
        .with_callback(move |o| {
            for (limit, count) in decisions.overflows() {
                o.observe(count, &[KeyValue::new("limit", limit)]);
            }
        })
        .build();
    Counters {
        _decisions: decisions_counter,
        _overflow: overflow,
    }
}
