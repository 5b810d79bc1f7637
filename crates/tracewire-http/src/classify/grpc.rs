//! gRPC: status codes, the gRPC classifier, and the state of one gRPC call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use http::{HeaderMap, StatusCode};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanRef;
use tracewire_core::attributes as attr;
use tracewire_core::operation::Failure;

use super::{Classify, Protocol, Side};

/// The `rpc.system` value.
const GRPC: &str = "grpc";
/// The value of `rpc.method` for a method the server does not know.
const OTHER: &str = "_OTHER";

/// A gRPC status code (`grpc-status`), as listed in the gRPC specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GrpcCode {
    /// `0`: not an error.
    Ok = 0,
    /// `1`: cancelled, typically by the caller.
    Cancelled = 1,
    /// `2`: unknown error.
    Unknown = 2,
    /// `3`: the client gave an invalid argument.
    InvalidArgument = 3,
    /// `4`: the deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// `5`: an entity was not found.
    NotFound = 5,
    /// `6`: the entity a client tried to create exists.
    AlreadyExists = 6,
    /// `7`: the caller may not do this.
    PermissionDenied = 7,
    /// `8`: a resource (quota, space) is exhausted.
    ResourceExhausted = 8,
    /// `9`: the system is not in the state the call needs.
    FailedPrecondition = 9,
    /// `10`: aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// `11`: out of the valid range.
    OutOfRange = 11,
    /// `12`: the method is not implemented or not known.
    Unimplemented = 12,
    /// `13`: an internal error.
    Internal = 13,
    /// `14`: the service is unavailable.
    Unavailable = 14,
    /// `15`: unrecoverable data loss or corruption.
    DataLoss = 15,
    /// `16`: the request has no valid credentials.
    Unauthenticated = 16,
}

impl GrpcCode {
    const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code of a number; `None` outside 0–16.
    pub fn from_i32(code: i32) -> Option<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The number (`rpc.grpc.status_code`).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The name (`rpc.response.status_code`, and `error.type` for failures): `OK`,
    /// `DEADLINE_EXCEEDED`, …
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Ok => "OK",
            GrpcCode::Cancelled => "CANCELLED",
            GrpcCode::Unknown => "UNKNOWN",
            GrpcCode::InvalidArgument => "INVALID_ARGUMENT",
            GrpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            GrpcCode::NotFound => "NOT_FOUND",
            GrpcCode::AlreadyExists => "ALREADY_EXISTS",
            GrpcCode::PermissionDenied => "PERMISSION_DENIED",
            GrpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            GrpcCode::FailedPrecondition => "FAILED_PRECONDITION",
            GrpcCode::Aborted => "ABORTED",
            GrpcCode::OutOfRange => "OUT_OF_RANGE",
            GrpcCode::Unimplemented => "UNIMPLEMENTED",
            GrpcCode::Internal => "INTERNAL",
            GrpcCode::Unavailable => "UNAVAILABLE",
            GrpcCode::DataLoss => "DATA_LOSS",
            GrpcCode::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Whether the semantic conventions count this code as a failure on `side`: on the server
    /// `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE` and
    /// `DATA_LOSS` (the others describe the client's request); on the client every code but
    /// `OK`.
    ///
    /// ```
    /// use tracewire_http::classify::{GrpcCode, Side};
    /// assert!(GrpcCode::Internal.is_failure(Side::Server));
    /// assert!(!GrpcCode::NotFound.is_failure(Side::Server));
    /// assert!(GrpcCode::NotFound.is_failure(Side::Client));
    /// ```
    pub fn is_failure(self, side: Side) -> bool {
        match side {
            Side::Client => self != GrpcCode::Ok,
            Side::Server => matches!(
                self,
                GrpcCode::Unknown
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::Unimplemented
                    | GrpcCode::Internal
                    | GrpcCode::Unavailable
                    | GrpcCode::DataLoss
            ),
        }
    }

    /// The code a client derives from the HTTP status of a response that carries no
    /// `grpc-status` (the mapping of the gRPC specification).
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200 => GrpcCode::Unknown,
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// gRPC conventions for every request, whatever its content type: for a tonic server or a
/// tonic `Channel` (where every request is gRPC anyway, detection included).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

impl GrpcClassifier {
    /// The gRPC classifier.
    pub fn new() -> Self {
        Self
    }
}

impl Classify for GrpcClassifier {
    fn protocol(&self, _: &http::Method, _: &http::Uri, _: &HeaderMap) -> Protocol {
        Protocol::Grpc
    }
}

/// Whether `content-type` is `application/grpc`, `application/grpc+…` or
/// `application/grpc;…` (not gRPC-Web, whose trailers travel in the body).
pub(crate) fn grpc_content_type(headers: &HeaderMap) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let bytes = value.as_bytes();
    bytes.len() >= PREFIX.len()
        && bytes[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && matches!(bytes.get(PREFIX.len()), None | Some(b'+' | b';'))
}

/// The status in `grpc-status`, if the header is there. A value that is not a known code is
/// `UNKNOWN`, as gRPC clients read it.
fn status_of(headers: &HeaderMap) -> Option<GrpcCode> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .and_then(GrpcCode::from_i32)
            .unwrap_or(GrpcCode::Unknown),
    )
}

/// The percent-decoded `grpc-message`, at most 512 bytes of it; undecodable bytes are kept as
/// written.
fn message_of(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("grpc-message")?.as_bytes();
    let mut out = Vec::with_capacity(raw.len().min(512));
    let mut i = 0;
    while i < raw.len() && out.len() < 512 {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%'
            && let (Some(Some(h)), Some(Some(l))) = (
                raw.get(i + 1).map(|b| hex(*b)),
                raw.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    (!text.is_empty()).then_some(text)
}

/// Service, method and span name of a gRPC path, leaked once per distinct path and shared by
/// every later call without allocation. Bounded: past [`NameCache::LIMIT`] paths, names are
/// built per call.
struct NameCache;

#[derive(Clone, Copy)]
struct StaticNames {
    /// `pkg.Service/Method`; the service and the method are slices of it.
    full: &'static str,
    slash: usize,
}

impl StaticNames {
    fn service(self) -> &'static str {
        &self.full[..self.slash]
    }
    fn method(self) -> &'static str {
        &self.full[self.slash + 1..]
    }
}

impl NameCache {
    const LIMIT: usize = 1024;

    fn map() -> &'static RwLock<HashMap<Box<str>, StaticNames>> {
        static MAP: OnceLock<RwLock<HashMap<Box<str>, StaticNames>>> = OnceLock::new();
        MAP.get_or_init(RwLock::default)
    }

    fn get(path: &str) -> Option<StaticNames> {
        Self::map().read().ok()?.get(path).copied()
    }

    /// Caches the names of `/{full}`.
    #[cold]
    fn insert(full: &str, slash: usize) -> Option<StaticNames> {
        let path = format!("/{full}");
        let mut map = Self::map().write().ok()?;
        if let Some(names) = map.get(path.as_str()) {
            return Some(*names);
        }
        if map.len() >= Self::LIMIT {
            return None;
        }
        let names = StaticNames {
            full: Box::leak(Box::from(full)),
            slash,
        };
        map.insert(path.into_boxed_str(), names);
        Some(names)
    }
}

/// `/pkg.Service/Method` → (`pkg.Service/Method`, index of the slash); `None` for anything
/// else.
fn parse_path(path: &str) -> Option<(&str, usize)> {
    let full = path.strip_prefix('/')?;
    let slash = full.find('/')?;
    let (service, method) = (&full[..slash], &full[slash + 1..]);
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((full, slash))
}

/// How a call's response ended, as far as the layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The response ended (trailers, or end of stream).
    Complete,
    /// The response (or the future) was dropped before its end.
    Dropped,
    /// The inner service, the transport or the body failed; the operation records that
    /// error.
    Failed,
}

/// The state of one gRPC call: its names, and the status once a response head or trailers
/// brought one.
pub(crate) struct GrpcCall {
    side: Side,
    names: Names,
    code: Option<GrpcCode>,
    message: Option<String>,
    /// The status came in the response head (a trailers-only response): final.
    trailers_only: bool,
}

enum Names {
    Static(StaticNames),
    Owned {
        full: Box<str>,
        slash: usize,
    },
    /// Not a `/service/method` path.
    Invalid {
        path: Box<str>,
    },
}

impl fmt::Debug for GrpcCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCall")
            .field("side", &self.side)
            .field("name", &self.span_name())
            .field("code", &self.code)
            .finish()
    }
}

impl GrpcCall {
    /// A call to `path`. The client side caches names at once (its paths come from code);
    /// the server side only once a call ended with the method recognised (its paths come from
    /// the network).
    pub(crate) fn start(path: &str, side: Side) -> Self {
        let names = match NameCache::get(path) {
            Some(names) => Names::Static(names),
            None => match parse_path(path) {
                Some((full, slash)) => match side {
                    Side::Client => match NameCache::insert(full, slash) {
                        Some(names) => Names::Static(names),
                        None => Names::Owned {
                            full: full.into(),
                            slash,
                        },
                    },
                    Side::Server => Names::Owned {
                        full: full.into(),
                        slash,
                    },
                },
                None => Names::Invalid { path: path.into() },
            },
        };
        Self {
            side,
            names,
            code: None,
            message: None,
            trailers_only: false,
        }
    }

    fn service_method(&self) -> Option<(Cow<'static, str>, Cow<'static, str>)> {
        match &self.names {
            Names::Static(names) => Some((
                Cow::Borrowed(names.service()),
                Cow::Borrowed(names.method()),
            )),
            Names::Owned { full, slash } => Some((
                Cow::Owned(full[..*slash].to_owned()),
                Cow::Owned(full[*slash + 1..].to_owned()),
            )),
            Names::Invalid { .. } => None,
        }
    }

    /// `{rpc.service}/{rpc.method}`, or `grpc` for a path that names no method.
    pub(crate) fn span_name(&self) -> Cow<'static, str> {
        match &self.names {
            Names::Static(names) => Cow::Borrowed(names.full),
            Names::Owned { full, .. } => Cow::Owned(full.to_string()),
            Names::Invalid { .. } => Cow::Borrowed(GRPC),
        }
    }

    /// The attributes known when the call starts: `rpc.system`, `rpc.system.name`, and on
    /// the client side `rpc.service` and `rpc.method` (`_OTHER` and `rpc.method_original` for a
    /// bad path). A server knows whether it recognises the method only when the call ends.
    pub(crate) fn start_attributes(&self, out: &mut Vec<KeyValue>) {
        out.push(KeyValue::new(attr::RPC_SYSTEM, GRPC));
        out.push(KeyValue::new(attr::RPC_SYSTEM_NAME, GRPC));
        if self.side == Side::Client {
            self.method_attributes(out);
        }
    }

    fn method_attributes(&self, out: &mut Vec<KeyValue>) {
        match self.service_method() {
            Some((service, method)) => {
                out.push(KeyValue::new(attr::RPC_SERVICE, service));
                out.push(KeyValue::new(attr::RPC_METHOD, method));
            }
            None => {
                out.push(KeyValue::new(attr::RPC_METHOD, OTHER));
                if let Names::Invalid { path } = &self.names {
                    out.push(KeyValue::new(attr::RPC_METHOD_ORIGINAL, path.to_string()));
                }
            }
        }
    }

    /// Reads the response head: a trailers-only response carries `grpc-status` here; a
    /// response that is not `200 OK` never brings one, so its HTTP status decides.
    pub(crate) fn on_response_head(&mut self, status: StatusCode, headers: &HeaderMap) {
        if let Some(code) = status_of(headers) {
            self.code = Some(code);
            self.message = message_of(headers);
            self.trailers_only = true;
        } else if status != StatusCode::OK {
            self.code = Some(GrpcCode::from_http_status(status));
        }
    }

    /// Reads the trailers, which end the call.
    pub(crate) fn on_trailers(&mut self, trailers: &HeaderMap) {
        if !self.trailers_only
            && let Some(code) = status_of(trailers)
        {
            self.code = Some(code);
            self.message = message_of(trailers);
        }
    }

    /// The status the call ended with, once known.
    pub(crate) fn code(&self) -> Option<GrpcCode> {
        self.code
    }

    /// Ends the call: sets the status attributes and names on `span`, appends the metric
    /// attributes (without `error.type`, which the operation adds) to `metric`, and returns
    /// the failure the status stands for, if any. A call that ended without a status is
    /// `UNKNOWN`; one dropped before its end is `CANCELLED`. When the layer saw an error itself
    /// (`layer_failed`: inner service, transport, body), that error wins over the status, and
    /// a call that failed that way before any status has none.
    pub(crate) fn end(
        &mut self,
        classifier: &dyn Classify,
        ending: Ending,
        layer_failed: bool,
        span: &SpanRef<'_>,
        metric: &mut Vec<KeyValue>,
    ) -> Option<Failure> {
        let code = self.code.or(match (ending, layer_failed) {
            (_, true) | (Ending::Failed, false) => None,
            (Ending::Complete, false) => Some(GrpcCode::Unknown),
            (Ending::Dropped, false) => Some(GrpcCode::Cancelled),
        });
        // A server does not know a method it answers UNIMPLEMENTED for: keep the client's
        // name out of span names and metrics.
        let unknown_method = self.side == Side::Server && code == Some(GrpcCode::Unimplemented);
        metric.push(KeyValue::new(attr::RPC_SYSTEM, GRPC));
        metric.push(KeyValue::new(attr::RPC_SYSTEM_NAME, GRPC));
        if self.side == Side::Server && !unknown_method {
            let mut names = Vec::with_capacity(2);
            self.method_attributes(&mut names);
            span.set_attributes(names);
        }
        match self.service_method() {
            Some(_) if unknown_method => {
                span.update_name(GRPC);
                span.set_attribute(KeyValue::new(attr::RPC_METHOD, OTHER));
                if let Some(full) = self.full_path() {
                    span.set_attribute(KeyValue::new(attr::RPC_METHOD_ORIGINAL, full));
                }
                metric.push(KeyValue::new(attr::RPC_METHOD, OTHER));
            }
            Some((service, method)) => {
                metric.push(KeyValue::new(attr::RPC_SERVICE, service));
                metric.push(KeyValue::new(attr::RPC_METHOD, method));
                if let Names::Owned { full, slash } = &self.names {
                    // Recognised by the server: later calls share the names.
                    NameCache::insert(full, *slash);
                }
            }
            None => metric.push(KeyValue::new(attr::RPC_METHOD, OTHER)),
        }
        let code = code?;
        span.set_attribute(KeyValue::new(
            attr::RPC_GRPC_STATUS_CODE,
            i64::from(code.as_i32()),
        ));
        span.set_attribute(KeyValue::new(attr::RPC_RESPONSE_STATUS_CODE, code.as_str()));
        metric.push(KeyValue::new(
            attr::RPC_GRPC_STATUS_CODE,
            i64::from(code.as_i32()),
        ));
        metric.push(KeyValue::new(attr::RPC_RESPONSE_STATUS_CODE, code.as_str()));
        if layer_failed || !classifier.is_grpc_failure(code, self.side) {
            return None;
        }
        Some(match self.message.take() {
            Some(message) => Failure::exception(code.as_str(), message),
            None => Failure::status(code.as_str()),
        })
    }

    fn full_path(&self) -> Option<String> {
        match &self.names {
            Names::Static(names) => Some(format!("/{}", names.full)),
            Names::Owned { full, .. } => Some(format!("/{full}")),
            Names::Invalid { path } => Some(path.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn codes_round_trip() {
        for (i, code) in GrpcCode::ALL.iter().enumerate() {
            assert_eq!(GrpcCode::from_i32(i as i32), Some(*code));
            assert_eq!(code.as_i32(), i as i32);
        }
        assert_eq!(GrpcCode::from_i32(17), None);
        assert_eq!(GrpcCode::from_i32(-1), None);
        assert_eq!(GrpcCode::Internal.to_string(), "INTERNAL");
    }

    #[test]
    fn server_failures_are_the_listed_codes() {
        let failing: Vec<&str> = GrpcCode::ALL
            .iter()
            .filter(|c| c.is_failure(Side::Server))
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            failing,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        assert_eq!(
            GrpcCode::ALL
                .iter()
                .filter(|c| c.is_failure(Side::Client))
                .count(),
            16
        );
    }

    #[test]
    fn statuses_and_messages_from_headers() {
        assert_eq!(
            status_of(&with("grpc-status", "13")),
            Some(GrpcCode::Internal)
        );
        assert_eq!(status_of(&with("grpc-status", "0")), Some(GrpcCode::Ok));
        assert_eq!(
            status_of(&with("grpc-status", "99")),
            Some(GrpcCode::Unknown)
        );
        assert_eq!(
            status_of(&with("grpc-status", "x")),
            Some(GrpcCode::Unknown)
        );
        assert_eq!(status_of(&HeaderMap::new()), None);
        assert_eq!(
            message_of(&with("grpc-message", "name%20%22fail%22%2")).as_deref(),
            Some("name \"fail\"%2")
        );
        assert_eq!(
            message_of(&with("grpc-message", "caf%C3%A9")).as_deref(),
            Some("café")
        );
        assert_eq!(message_of(&with("grpc-message", "")), None);
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/a.B/C"), Some(("a.B/C", 3)));
        assert_eq!(parse_path("/B/C"), Some(("B/C", 1)));
        assert_eq!(parse_path("a.B/C"), None);
        assert_eq!(parse_path("/a.B/"), None);
        assert_eq!(parse_path("//C"), None);
        assert_eq!(parse_path("/a/b/c"), None);
        let call = GrpcCall::start("/nope", Side::Client);
        assert_eq!(call.span_name(), "grpc");
        let mut attributes = Vec::new();
        call.start_attributes(&mut attributes);
        assert!(attributes.contains(&KeyValue::new(attr::RPC_METHOD, OTHER)));
        assert!(attributes.contains(&KeyValue::new(attr::RPC_METHOD_ORIGINAL, "/nope")));
    }

    #[test]
    fn trailers_only_and_http_statuses() {
        let mut call = GrpcCall::start("/a.B/C", Side::Client);
        call.on_response_head(StatusCode::OK, &with("grpc-status", "5"));
        call.on_trailers(&with("grpc-status", "0"));
        assert_eq!(call.code(), Some(GrpcCode::NotFound));

        let mut call = GrpcCall::start("/a.B/C", Side::Client);
        call.on_response_head(StatusCode::OK, &HeaderMap::new());
        assert_eq!(call.code(), None);
        call.on_trailers(&with("grpc-status", "0"));
        assert_eq!(call.code(), Some(GrpcCode::Ok));

        let mut call = GrpcCall::start("/a.B/C", Side::Client);
        call.on_response_head(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new());
        assert_eq!(call.code(), Some(GrpcCode::Unavailable));
    }
}
