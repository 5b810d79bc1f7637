//! The sampling settings of [`Builder`](crate::Builder).

use std::time::Duration;

use super::{Limits, Rule};
use crate::Builder;

/// Sampling: each setting wins over its environment variable (see [`crate::sampling`]).
impl Builder {
    /// The fraction of ordinary traces to keep, `0.0`–`1.0` (default
    /// `TRACEWIRE_SAMPLING_RATIO`, else `1.0`). Failing, slow and synthetic traces are kept
    /// whatever the ratio.
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling.ratio = Some(ratio);
        self
    }

    /// Keeps every trace whose local root lasts at least `slow` (default
    /// `TRACEWIRE_SAMPLING_SLOW`, else 1 s).
    pub fn sampling_slow(mut self, slow: Duration) -> Self {
        self.sampling.slow = Some(slow);
        self
    }

    /// Adds a sampling rule (replacing `TRACEWIRE_SAMPLING_RULES`); the first matching rule
    /// wins.
    pub fn sampling_rule(mut self, rule: Rule) -> Self {
        self.sampling.rules.get_or_insert_with(Vec::new).push(rule);
        self
    }

    /// Whether an incoming sampled (or unsampled) `traceparent` decides for this service
    /// (default `TRACEWIRE_SAMPLING_PARENT_BASED`, else `true`). Without it, this service
    /// decides from the trace id alone, which at the same ratio keeps the same traces.
    pub fn sampling_parent_based(mut self, parent_based: bool) -> Self {
        self.sampling.parent_based = Some(parent_based);
        self
    }

    /// The baggage key whose presence marks a synthetic request, always kept, its spans
    /// tagged `user_agent.synthetic.type` with the value (default
    /// `TRACEWIRE_SAMPLING_SYNTHETIC_KEY`, else `synthetic`).
    pub fn synthetic_baggage_key(mut self, key: impl Into<String>) -> Self {
        self.sampling.synthetic_key = Some(key.into());
        self
    }

    /// Baggage keys copied as attributes onto every span this process records for the
    /// trace; a trailing `*` matches by prefix (`feature_flag.*`). Default
    /// `TRACEWIRE_BAGGAGE_ATTRIBUTES` (comma-separated), else none.
    pub fn baggage_attributes<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sampling.breadcrumbs = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Bounds of the tail buffer (default [`Limits::default`]).
    pub fn sampling_limits(mut self, limits: Limits) -> Self {
        self.sampling.limits = Some(limits);
        self
    }

    /// Turns tracewire's sampling off: the SDK's sampler (`OTEL_TRACES_SAMPLER`) decides
    /// alone and nothing is buffered.
    pub fn without_tail_sampling(mut self) -> Self {
        self.sampling.disabled = true;
        self
    }
}
