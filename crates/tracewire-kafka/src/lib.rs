//! kafka instrumentation (in progress).
