//! How the server and client layers judge a call: which conventions it is recorded under (HTTP
//! or gRPC) and which outcomes are failures.
//!
//! A gRPC call travels as an HTTP/2 `POST` answered `200 OK`; its real outcome is the
//! `grpc-status` in the response trailers, or in the response headers of a *trailers-only*
//! response (what servers send when a call fails before any message). Judged by the HTTP
//! status alone every failing call would look like a success, so both layers take a
//! [`Classify`] implementation:
//!
//! - [`DefaultClassifier`] (what [`ServerLayer::new`](crate::ServerLayer::new) and
//!   [`ClientLayer::new`](crate::ClientLayer::new) use): HTTP conventions, except for requests
//!   whose `content-type` is `application/grpc` or `application/grpc+…`, recorded as gRPC;
//! - [`HttpClassifier`]: HTTP conventions for every request, whatever its content type;
//! - [`GrpcClassifier`]: gRPC conventions for every request (a tonic server or `Channel`);
//! - your own type implementing [`Classify`], to choose per request or to change which
//!   status codes count as failures.
//!
//! A gRPC call's span is named `{rpc.service}/{rpc.method}` from the request path
//! (`/tracewire.demo.Greeter/SayHello` → `tracewire.demo.Greeter/SayHello`), carries the
//! `rpc.*` attributes, and ends when the trailers arrive — after the last message of a
//! streaming call. Its duration goes to `rpc.server.call.duration` or
//! `rpc.client.call.duration` instead of the `http.*` histograms. `docs/grpc.md` lists every
//! attribute.
//!
//! # Example
//!
//! ```
//! use tracewire_http::classify::GrpcClassifier;
//! use tracewire_http::{ClientLayer, ServerLayer};
//!
//! // gRPC detected from the content type (the default) …
//! let server = ServerLayer::new();
//! // … or chosen explicitly for a service that only speaks gRPC.
//! let server = ServerLayer::new().classifier(GrpcClassifier::new());
//! let client = ClientLayer::new_for_grpc();
//! # let _ = (server, client);
//! ```

mod grpc;
mod http;

use std::fmt;

pub use self::grpc::{GrpcClassifier, GrpcCode};
pub use self::http::{DefaultClassifier, HttpClassifier};
pub(crate) use grpc::{Ending, GrpcCall, grpc_content_type};

/// Which side of a call a layer instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The server layer: the call was received.
    Server,
    /// The client layer: the call was sent.
    Client,
}

/// The conventions a call is recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP: `"{method} {route}"` spans, `http.*` attributes, judged by the HTTP status.
    Http,
    /// gRPC: `"{service}/{method}"` spans, `rpc.*` attributes, judged by `grpc-status`.
    Grpc,
}

/// Decides, per request, how a layer records a call and which outcomes are failures.
///
/// Called on the request path through a shared reference: keep it cheap and free of locks.
/// The provided methods follow the semantic conventions; override them to change the rules.
///
/// ```
/// use tracewire_http::classify::{Classify, GrpcCode, Protocol, Side};
///
/// /// gRPC everywhere, and a server-side NOT_FOUND counts as a failure too.
/// #[derive(Debug)]
/// struct StrictGrpc;
///
/// impl Classify for StrictGrpc {
///     fn protocol(&self, _: &http::Method, _: &http::Uri, _: &http::HeaderMap) -> Protocol {
///         Protocol::Grpc
///     }
///
///     fn is_grpc_failure(&self, code: GrpcCode, side: Side) -> bool {
///         code == GrpcCode::NotFound || code.is_failure(side)
///     }
/// }
///
/// let layer = tracewire_http::ServerLayer::new().classifier(StrictGrpc);
/// # let _ = layer;
/// ```
pub trait Classify: fmt::Debug + Send + Sync + 'static {
    /// The conventions for a request, from its head.
    fn protocol(
        &self,
        method: &::http::Method,
        uri: &::http::Uri,
        headers: &::http::HeaderMap,
    ) -> Protocol;

    /// Whether an HTTP call that ended with `status` failed. By default: 5xx on the server
    /// side, 4xx and 5xx on the client side.
    fn is_http_failure(&self, status: ::http::StatusCode, side: Side) -> bool {
        let code = status.as_u16();
        code >= 500 || (side == Side::Client && code >= 400)
    }

    /// Whether a gRPC call that ended with `code` failed; see [`GrpcCode::is_failure`] for
    /// the default.
    fn is_grpc_failure(&self, code: GrpcCode, side: Side) -> bool {
        code.is_failure(side)
    }
}

/// A shared classifier, as the layers hold it.
#[derive(Clone, Debug)]
pub(crate) struct SharedClassifier(pub(crate) std::sync::Arc<dyn Classify>);

impl Default for SharedClassifier {
    fn default() -> Self {
        Self(std::sync::Arc::new(DefaultClassifier))
    }
}

impl SharedClassifier {
    /// The conventions for a request.
    pub(crate) fn protocol(
        &self,
        method: &::http::Method,
        uri: &::http::Uri,
        headers: &::http::HeaderMap,
    ) -> Protocol {
        self.0.protocol(method, uri, headers)
    }

    /// The failure an HTTP call that ended with `status` stands for: `error.type` is the
    /// status code.
    pub(crate) fn http_failure(
        &self,
        status: ::http::StatusCode,
        side: Side,
    ) -> Option<tracewire_core::operation::Failure> {
        self.0.is_http_failure(status, side).then(|| {
            tracewire_core::operation::Failure::status(tracewire_core::error::status_text(
                status.as_u16(),
            ))
        })
    }
}
