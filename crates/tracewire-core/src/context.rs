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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Wraps an already validated id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The request id in the current OpenTelemetry context, if any.
    pub fn current() -> Option<RequestId> {
        Context::map_current(|cx| cx.get::<RequestId>().cloned())
    }
}

impl From<&RequestId> for opentelemetry::Value {
    /// The id as an attribute value, sharing the id's allocation.
    fn from(id: &RequestId) -> Self {
        opentelemetry::Value::String(opentelemetry::StringValue::from(id.0.clone()))
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&&*self.0).finish()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
