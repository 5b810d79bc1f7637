//! Server instrumentation: one layer on an axum `Router` (or any tower HTTP service).
//!
//! For every request, [`ServerLayer`]:
//!
//! - starts a SERVER span named `"{method} {route}"` (`"{method}"` when no route matched), whose
//!   parent is the context extracted from the incoming headers through the configured
//!   propagator (W3C `traceparent`/`tracestate` and `baggage` by default); a malformed or
//!   oversized header starts a fresh trace and never fails the request;
//! - sets the semantic-convention attributes `http.request.method`, `http.route`, `url.path`,
//!   `url.scheme`, `url.query` (values redacted), `server.address`, `server.port`,
//!   `network.protocol.version`, `user_agent.original`, `client.address`,
//!   `http.response.status_code`, `error.type`, and `http.request.id`; status Error on 5xx and
//!   on errors of the inner service;
//! - runs the inner service with the span's context attached on every poll, so `tracing`
//!   events in handlers carry the trace id and spans started there are its children;
//! - answers with `traceparent` (the server span) and `x-request-id` (a valid incoming one is
//!   kept, otherwise a fresh one) response headers; the request id is also in the request's
//!   extensions as [`RequestId`] and on every log line of the request;
//! - ends the span, records `http.server.request.duration` and decrements
//!   `http.server.active_requests` when the response body has been sent, failed or been
//!   dropped — so streaming responses are measured to their last byte;
//! - writes one access-log event (target `tracewire::access`).
//!
//! A request with a gRPC `content-type` is a gRPC call instead: a `{service}/{method}` span
//! with `rpc.*` attributes, judged by its `grpc-status` and measured in
//! `rpc.server.call.duration` (see [`crate::classify`] and [`ServerLayer::classifier`]).
//!
//! Header values named in the sensitive list (`authorization`, `cookie`, `set-cookie`,
//! `proxy-authorization`, `x-api-key` by default) never reach a span, a log line or a metric.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tracewire_http::ServerLayer;
//!
//! async fn get_user() -> &'static str {
//!     tracing::info!("loading user"); // carries the request's trace id
//!     "{}"
//! }
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(get_user))
//!     .layer(ServerLayer::new());
//! ```

mod body;
mod finish;
mod future;
mod layer;
mod service;
mod telemetry;

pub use body::ServerBody;
pub use future::ResponseFuture;
pub use layer::ServerLayer;
pub use service::Server;
pub use tracewire_core::RequestId;
