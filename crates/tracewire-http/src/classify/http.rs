//! The HTTP classifiers.

use super::{Classify, Protocol, grpc_content_type};

/// HTTP conventions, except for gRPC requests (`content-type: application/grpc…`), which are
/// recorded as gRPC. The classifier both layers use unless told otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl DefaultClassifier {
    /// The default classifier.
    pub fn new() -> Self {
        Self
    }
}

impl Classify for DefaultClassifier {
    fn protocol(&self, _: &http::Method, _: &http::Uri, headers: &http::HeaderMap) -> Protocol {
        if grpc_content_type(headers) {
            Protocol::Grpc
        } else {
            Protocol::Http
        }
    }
}

/// HTTP conventions for every request, gRPC ones included (judged by the HTTP status only).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// The HTTP-only classifier.
    pub fn new() -> Self {
        Self
    }
}

impl Classify for HttpClassifier {
    fn protocol(&self, _: &http::Method, _: &http::Uri, _: &http::HeaderMap) -> Protocol {
        Protocol::Http
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Side;
    use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

    fn headers(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static(content_type));
        headers
    }

    #[test]
    fn the_default_detects_grpc_from_the_content_type() {
        let uri = Uri::from_static("/pkg.Svc/Call");
        let judge = |ct| DefaultClassifier.protocol(&Method::POST, &uri, &headers(ct));
        assert_eq!(judge("application/grpc"), Protocol::Grpc);
        assert_eq!(judge("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(judge("Application/GRPC;charset=utf-8"), Protocol::Grpc);
        assert_eq!(judge("application/grpc-web"), Protocol::Http);
        assert_eq!(judge("application/json"), Protocol::Http);
        assert_eq!(
            DefaultClassifier.protocol(&Method::POST, &uri, &HeaderMap::new()),
            Protocol::Http
        );
        assert_eq!(
            HttpClassifier.protocol(&Method::POST, &uri, &headers("application/grpc")),
            Protocol::Http
        );
    }

    #[test]
    fn http_failures_per_side() {
        let c = DefaultClassifier;
        assert!(c.is_http_failure(StatusCode::BAD_GATEWAY, Side::Server));
        assert!(!c.is_http_failure(StatusCode::NOT_FOUND, Side::Server));
        assert!(c.is_http_failure(StatusCode::NOT_FOUND, Side::Client));
        assert!(!c.is_http_failure(StatusCode::OK, Side::Client));
    }
}
