//! Benchmarks live beside this crate: see `benches/*.rs`.
