use tower::Layer;

use super::attempt::Instruments;
use super::service::Client;
use crate::classify::{Classify, SharedClassifier};

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

    /// Classifies responses with `classifier` instead of the HTTP status rule
    /// ([`HttpStatus`](crate::classify::HttpStatus): 4xx and 5xx are failures).
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
