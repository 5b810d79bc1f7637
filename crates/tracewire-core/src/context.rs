//! Helpers for carrying the OpenTelemetry context across tasks and into log lines.
//!
//! tracewire attaches the context of the current span on every poll of the futures it wraps,
//! so `Context::current()` is right inside handlers, `#[traced]` bodies and consumer handlers.
//! Work spawned onto another task does not inherit it: wrap it with [`in_current_context`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::context::{FutureExt, WithContext};

/// Wraps `future` so it runs with the caller's current OpenTelemetry context attached on every
/// poll: spans started inside it become children of the current span, and its log lines carry
/// the current trace id.
///
/// ```
/// # async fn demo() {
/// let task = tracewire_core::context::in_current_context(async {
///     tracing::info!("still in the request's trace");
/// });
/// tokio::spawn(task).await.unwrap();
/// # }
/// ```
pub fn in_current_context<F: Future>(future: F) -> WithContext<F> {
    future.with_context(Context::current())
}

/// The request id of the HTTP request being served, stored in the OpenTelemetry context (and
/// in the request's extensions) by the server layer, written by the JSON log layer as
/// `request_id` on every line logged while serving that request.
///
/// An id the server makes itself ([`generate`](Self::generate)) is held inline: no allocation,
/// and a clone is a copy, not a reference count shared between threads.
///
/// ```
/// use tracewire_core::RequestId;
/// let id = RequestId::generate();
/// assert_eq!(id.as_str().len(), 32);
/// assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
/// assert_eq!(id, RequestId::new(id.as_str()));
/// ```
#[derive(Clone)]
pub struct RequestId(Repr);

#[derive(Clone)]
enum Repr {
    /// 32 lowercase hex digits.
    Generated([u8; 32]),
    Shared(Arc<str>),
}

impl RequestId {
    /// Wraps an already validated id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(Repr::Shared(id.into()))
    }

    /// A fresh random id: 128 random bits as 32 lowercase hex digits.
    pub fn generate() -> Self {
        let random = rand::random::<u128>().to_be_bytes();
        let mut hex = [0u8; 32];
        for (four, eight) in random.chunks_exact(4).zip(hex.chunks_exact_mut(8)) {
            eight.copy_from_slice(&crate::w3c::hex_word([four[0], four[1], four[2], four[3]]));
        }
        Self(Repr::Generated(hex))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Hex digits only, so always UTF-8.
            Repr::Generated(hex) => std::str::from_utf8(hex).unwrap_or_default(),
            Repr::Shared(id) => id,
        }
    }

    /// The id's bytes: its text as [`as_str`](Self::as_str) gives it, without checking that
    /// a generated id is UTF-8 (it is hex digits only). For writing it into a header value.
    ///
    /// ```
    /// let id = tracewire_core::RequestId::generate();
    /// assert_eq!(id.as_bytes(), id.as_str().as_bytes());
    /// assert_eq!(tracewire_core::RequestId::new("req-1").as_bytes(), b"req-1");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Generated(hex) => hex,
            Repr::Shared(id) => id.as_bytes(),
        }
    }

    /// The request id in the current OpenTelemetry context, if any.
    pub fn current() -> Option<RequestId> {
        Context::map_current(|cx| cx.get::<RequestId>().cloned())
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RequestId {}

impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<&RequestId> for opentelemetry::Value {
    /// The id as an attribute value (sharing the id's allocation when it has one).
    fn from(id: &RequestId) -> Self {
        let text = match &id.0 {
            Repr::Generated(_) => opentelemetry::StringValue::from(id.as_str().to_owned()),
            Repr::Shared(shared) => opentelemetry::StringValue::from(shared.clone()),
        };
        opentelemetry::Value::String(text)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
