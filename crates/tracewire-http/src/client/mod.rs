//! Client instrumentation: one layer on any tower HTTP client (hyper-util's `Client`, a tonic
//! `Channel`, a `tower::ServiceBuilder` stack).
//!
//! For every request sent through it, [`ClientLayer`]:
//!
//! - starts a CLIENT span named `"{method}"` (`"HTTP"` for non-standard methods) as a child of
//!   the current context, with `http.request.method`, `server.address`, `server.port`,
//!   `url.full` (userinfo and query values redacted) and, from the second attempt on,
//!   `http.request.resend_count`;
//! - injects the span's context into the request headers through the configured propagator
//!   (W3C `traceparent`/`tracestate` and `baggage` by default), replacing any values already
//!   there; a value that is not a valid header is skipped and counted in
//!   `tracewire.propagation.rejected`, never a panic;
//! - polls the inner client with that context attached;
//! - records `http.response.status_code` and `network.protocol.version`; for a status ≥ 400
//!   `error.type` is the status code and the span status is Error (the semantic conventions
//!   for CLIENT spans); for a transport error, `error.type` is the error's type name, the span
//!   status Error with its message, and the error is returned to the caller unchanged;
//! - ends the span and records `http.client.request.duration` (seconds; method, server
//!   address and port, status code, protocol version, `error.type`) when the response body
//!   has been read to its end, has failed or has been dropped — exactly once.
//!
//! A request with a gRPC `content-type` (a tonic `Channel`'s) is a gRPC call instead: a
//! `{service}/{method}` span with `rpc.*` attributes, judged by its `grpc-status`, ended by the
//! trailers and measured in `rpc.client.call.duration` (see [`crate::classify`] and
//! [`ClientLayer::classifier`]).
//!
//! # Retries and redirects
//!
//! Every physical attempt is its own CLIENT span under the same parent. Put the client layer
//! *inside* the retry layer, so each attempt passes through it:
//!
//! ```text
//! RetryLayer(RetryPolicy)          decides whether to send again; copies the request
//!   └─ ClientLayer                 one span per attempt, resend_count 1, 2, … from the copies
//!        └─ the HTTP client
//! ```
//!
//! The copies a retry policy makes carry a shared [`ResendCounter`] in their extensions: the
//! ready [`RetryPolicy`] (idempotent methods on 5xx and transport errors, any method on
//! connect errors, bounded attempts, exponential backoff with jitter) does it, and
//! [`CountResends`] adds it to any other `tower::retry` policy. For tower-http's
//! `FollowRedirect` (outside the client layer too), [`CountRedirects`] numbers the hops.
//!
//! With both, put `FollowRedirect` outside the retry layer: it gives the request its counter
//! before the retry layer copies it, so attempts and hops share one count (each hop retried on
//! its own). The other way round the count restarts at the first retry. A request that
//! already carries a [`ResendCounter`] (insert one yourself) keeps it through every layer.
//!
//! ```text
//! FollowRedirectLayer(CountRedirects)
//!   └─ RetryLayer(RetryPolicy)
//!        └─ ClientLayer
//!             └─ the HTTP client
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceBuilder;
//! use tower::retry::RetryLayer;
//! use tracewire_http::client::{ClientLayer, RetryPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(
//!         RetryPolicy::new()
//!             .max_attempts(3)
//!             .backoff(Duration::from_millis(50), Duration::from_secs(1)),
//!     ))
//!     .layer(ClientLayer::new())
//!     .service(http);
//! // `client` is a `tower::Service<http::Request<Full<Bytes>>>`: call it with
//! // `tower::ServiceExt::oneshot(client.clone(), request)`.
//! # let _ = client;
//! # }
//! ```

mod attempt;
mod body;
mod future;
mod layer;
mod redirect;
mod resend;
mod retry;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::ClientLayer;
pub use redirect::CountRedirects;
pub use resend::ResendCounter;
pub use retry::{CountResends, RetryPolicy, is_connect_error, is_idempotent};
pub use service::Client;

#[cfg(feature = "reqwest")]
pub(crate) use attempt::{Attempt, Instruments, Target};
