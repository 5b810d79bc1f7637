//! Server instrumentation (in progress).
