use std::sync::Arc;

use http::HeaderName;
use tower::Layer;
use tracewire_core::redact::SensitiveHeaders;

use super::service::Server;
use super::telemetry::{Config, Instruments, Shared};
use crate::classify::{Classify, GrpcClassifier, SharedClassifier};

/// A tower [`Layer`] that instruments every request of the service it wraps. See the
/// [module documentation](super) for what it records.
///
/// Build it after `tracewire::init()`: the tracer and the instruments are taken from the global
/// providers once, here, not per request.
#[derive(Debug, Clone)]
pub struct ServerLayer {
    shared: Arc<Shared>,
}

impl Default for ServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerLayer {
    /// A layer with the default configuration: sensitive headers redacted, access log on,
    /// `x-request-id` as the request-id header, no request headers recorded.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared::new(Config::default(), Instruments::from_globals())),
        }
    }

    /// Records the value of request header `name` as the span attribute
    /// `http.request.header.<name>` (redacted when the header is sensitive). Names are
    /// case-insensitive; a name that is not a valid header name is ignored with a warning.
    ///
    /// ```
    /// let layer = tracewire_http::ServerLayer::new().record_request_header("X-Tenant");
    /// ```
    pub fn record_request_header(mut self, name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(header) => {
                let key = opentelemetry::Key::from(format!("http.request.header.{lower}"));
                self.shared
                    .config_mut()
                    .recorded_headers
                    .push((header, key));
            }
            Err(_) => {
                tracing::warn!(header = name, "not a valid header name: not recorded");
            }
        }
        self
    }

    /// Replaces the list of headers whose values are never recorded.
    pub fn sensitive_headers(mut self, sensitive: SensitiveHeaders) -> Self {
        self.shared.config_mut().sensitive = sensitive;
        self
    }

    /// Turns the per-request access-log event on or off (on by default).
    pub fn access_log(mut self, enabled: bool) -> Self {
        self.shared.config_mut().access_log = enabled;
        self
    }

    /// Uses another header than `x-request-id` for the request id.
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.shared.config_mut().request_id_header = name;
        self
    }

    /// Leaves requests to `path` (exact match, e.g. a `/metrics` scrape route) out of the
    /// access log; their spans and metrics are still recorded.
    ///
    /// ```
    /// let layer = tracewire_http::ServerLayer::new().quiet_path("/metrics");
    /// ```
    pub fn quiet_path(mut self, path: &str) -> Self {
        self.shared.config_mut().quiet_paths.push(Box::from(path));
        self
    }

    /// A layer recording every request as a gRPC call: the same as
    /// `ServerLayer::new().classifier(GrpcClassifier::new())`. [`ServerLayer::new`] already
    /// records requests with a gRPC content type as gRPC calls.
    pub fn new_for_grpc() -> Self {
        Self::new().classifier(GrpcClassifier)
    }

    /// Chooses how requests are recorded and judged (see [`crate::classify`]); the
    /// [`DefaultClassifier`](crate::classify::DefaultClassifier) by default.
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.shared.config_mut().classifier = SharedClassifier(Arc::new(classifier));
        self
    }

    /// Records `url.scheme = https` when the request URI carries no scheme (HTTP/1 requests
    /// do not): set it on a TLS listener or behind a TLS-terminating proxy. `http` otherwise.
    pub fn https(mut self, https: bool) -> Self {
        self.shared.config_mut().https = https;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Server::new(inner, self.shared.clone())
    }
}
