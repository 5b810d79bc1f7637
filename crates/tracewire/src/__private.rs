//! Support code the macros expand to. Not public API.
