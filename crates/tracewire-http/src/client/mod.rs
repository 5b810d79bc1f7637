//! Outbound HTTP instrumentation (in progress).
