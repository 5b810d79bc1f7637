//! Semantic-convention values shared by the server and client sides.

use http::{Method, Version};

pub(crate) const METHOD_COUNT: usize = 10;
const METHODS: [&str; METHOD_COUNT] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];
pub(crate) const OTHER_METHOD: usize = METHOD_COUNT - 1;

/// Index of `method` in the known methods, [`OTHER_METHOD`] for anything else.
pub(crate) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => OTHER_METHOD,
    }
}

/// The `http.request.method` value for a method index: the method itself, or `_OTHER`.
pub(crate) fn method_value(index: usize) -> &'static str {
    METHODS[index.min(OTHER_METHOD)]
}

/// The standard method as a static string; `None` for anything else (recorded as `_OTHER`,
/// with the original in `http.request.method_original`).
pub(crate) fn method_name(method: &Method) -> Option<&'static str> {
    let index = method_index(method);
    (index != OTHER_METHOD).then(|| METHODS[index])
}

/// `network.protocol.version` of an HTTP version.
pub(crate) fn protocol_version(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}
