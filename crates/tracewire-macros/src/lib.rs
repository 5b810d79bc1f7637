//! Procedural macros of tracewire (in progress).
