//! Response classification: which responses count as failures, and their `error.type`.
//!
//! The server and client futures never decide this themselves: they hand the response head,
//! then the trailers (if the body has any), to a [`Classify`] and end their
//! [`Operation`](tracewire_core::operation::Operation) with whatever failure it returns.
//! [`HttpStatus`] is the default: the status code decides (5xx on the server side, 4xx and 5xx
//! on the client side, as the HTTP semantic conventions say). A protocol that reports its
//! outcome elsewhere (gRPC's `grpc-status` in trailers) plugs in its own classifier.

use std::fmt;

use http::{HeaderMap, StatusCode};
use tracewire_core::error::http_status_error_type;
use tracewire_core::operation::Failure;

/// Decides whether a response is a failure.
pub trait Classify: Send + Sync + 'static {
    /// Classifies the response head. `client_side` is `true` for responses an instrumented
    /// client received, `false` for responses an instrumented server sent.
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        client_side: bool,
    ) -> Option<Failure>;

    /// Classifies the trailers at the end of the body. A failure returned here replaces the
    /// one from the head. The default finds none.
    fn classify_trailers(&self, trailers: &HeaderMap, client_side: bool) -> Option<Failure> {
        let _ = (trailers, client_side);
        None
    }
}

/// The HTTP semantic-convention rule: `error.type` is the status code for 5xx, and for 4xx on
/// the client side.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatus;

impl Classify for HttpStatus {
    fn classify_response(
        &self,
        status: StatusCode,
        _headers: &HeaderMap,
        client_side: bool,
    ) -> Option<Failure> {
        http_status_error_type(status.as_u16(), client_side).map(Failure::status)
    }
}

/// A shared classifier, as the layers hold it.
#[derive(Clone)]
pub(crate) struct SharedClassifier(pub(crate) std::sync::Arc<dyn Classify>);

impl Default for SharedClassifier {
    fn default() -> Self {
        Self(std::sync::Arc::new(HttpStatus))
    }
}

impl fmt::Debug for SharedClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedClassifier").finish_non_exhaustive()
    }
}
