use tower::Layer;

use super::attempt::Instruments;
use super::service::Client;
use crate::classify::{Classify, GrpcClassifier, SharedClassifier};

/// A tower [`Layer`] that instruments every request sent through the HTTP client it wraps.
/// See the [module documentation](super) for what it records and how to compose it with
/// retries.
///
/// Build it after `tracewire::init()`: the tracer and the `http.client.request.duration`
/// histogram are taken from the global providers once, here, not per request.
#[derive(Debug, Clone)]
pub struct ClientLayer {
    instruments: Instruments,
}

impl Default for ClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientLayer {
    /// A layer recording through the globally installed tracer and meter providers.
    pub fn new() -> Self {
        Self {
            instruments: Instruments::from_globals(),
        }
    }

    /// A layer recording every request as a gRPC call (for a tonic `Channel`): the same as
    /// `ClientLayer::new().classifier(GrpcClassifier::new())`. [`ClientLayer::new`] already
    /// records requests with a gRPC content type as gRPC calls.
    pub fn new_for_grpc() -> Self {
        Self::new().classifier(GrpcClassifier)
    }

    /// Chooses how requests are recorded and judged (see [`crate::classify`]); the
    /// [`DefaultClassifier`](crate::classify::DefaultClassifier) by default.
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.instruments.classifier = SharedClassifier(std::sync::Arc::new(classifier));
        self
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = Client<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Client::new(inner, self.instruments.clone())
    }
}
