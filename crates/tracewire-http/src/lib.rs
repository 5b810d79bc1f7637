//! HTTP instrumentation for tracewire: one tower layer on each side of a connection.
//!
//! - [`ServerLayer`] instruments any tower HTTP server (an axum `Router`, hyper, tonic):
//!   a SERVER span per request, parented on the incoming `traceparent`, semantic-convention
//!   attributes, `http.server.*` metrics, one access-log line, `traceparent` and
//!   `x-request-id` response headers.
//! - [`client`] instruments any tower HTTP client (hyper-util's client, a tonic `Channel`):
//!   a CLIENT span per attempt, context injected into the outgoing headers, resend counting
//!   across retries.
//! - [`propagation`]: the `HeaderMap` carriers both sides use.

pub mod classify;
pub mod client;
pub mod propagation;
#[cfg(feature = "reqwest")]
pub mod reqwest;
mod semconv;
pub mod server;

pub use client::ClientLayer;
pub use server::{RequestId, ServerLayer};
