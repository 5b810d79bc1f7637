//! Compile-time tests of tracewire, kept in a package of their own so that trybuild builds the
//! smallest dependency tree that can compile them. The cases live in `tests/ui/`:
//!
//! - `pass/`: every accepted form of `#[traced]`, `#[derive(Event)]` and a bound guard compiles
//!   (and runs);
//! - `fail/`: every misuse is an error pointing at the offending token, and a `Telemetry` or
//!   `Builder` left unused is a warning (an error under `#![deny(unused_must_use)]`); the
//!   messages are pinned in the `.stderr` files beside each case.
//!
//! Run with `cargo nextest run -p tracewire-compile-tests`; after an intended change of a
//! message, `TRYBUILD=overwrite` rewrites the `.stderr` files.
