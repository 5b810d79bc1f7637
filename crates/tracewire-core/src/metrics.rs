//! The tracewire meter and helpers to build instruments the same way in every crate.
//!
//! Instruments are built once (when a layer, wrapper or `#[traced]` call site is first used)
//! and recorded many times; never build them per request.

use opentelemetry::metrics::{Histogram, Meter};

/// Bucket boundaries (seconds) the semantic conventions recommend for `*.duration` histograms.
/// The SDK's default boundaries are millisecond-scaled, so every duration histogram sets these.
pub const DURATION_BOUNDARIES_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The tracewire meter, from the global meter provider at the time of the call.
pub fn meter() -> Meter {
    opentelemetry::global::meter_with_scope(crate::scope())
}

/// A histogram of durations in seconds (`unit = "s"`) with the semantic-convention buckets.
pub fn duration_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BOUNDARIES_SECONDS.to_vec())
        .build()
}
