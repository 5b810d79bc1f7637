//! The pages and the JSON API as one tower service.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::analysis::{red, service_map};
use crate::html;
use crate::store::Store;

/// How many items the hand-off in front of the store dropped (for the page footer).
pub(crate) trait DroppedCount: Send + Sync {
    fn dropped(&self) -> u64;
}

/// Serves the view of a [`Store`]: HTML pages and the JSON API beneath them.
///
/// | path (under the base) | answer |
/// |---|---|
/// | `/` | trace list; query `q` (trace id, or text in a name, route, destination or function), `status` (`error`/`ok`), `min_ms`, `service` |
/// | `/traces/{trace_id}` | the trace: waterfall, attributes, events, links, log lines |
/// | `/red` | rate, errors and duration per route, `#[traced]` function and queue/topic |
/// | `/map` | the service map (inline SVG and a table) |
/// | `/api/traces`, `/api/traces/{trace_id}`, `/api/red`, `/api/map`, `/api/stats` | the same as JSON |
///
/// It answers the path with or without the base prefix, so it works mounted with axum's
/// `nest_service(base, …)` (which strips it) as well as behind a plain fallback.
#[derive(Clone)]
pub struct ViewService {
    store: Store,
    base: Arc<str>,
    title: Arc<str>,
    dropped: Option<Arc<dyn DroppedCount>>,
}

impl fmt::Debug for ViewService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewService")
            .field("base", &self.base)
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

impl ViewService {
    /// Serves `store`, its links rooted at `base` (`""` at the root, `/_tracewire` nested).
    pub fn new(store: Store, base: &str) -> Self {
        Self {
            store,
            base: base.trim_end_matches('/').into(),
            title: "tracewire".into(),
            dropped: None,
        }
    }

    /// The heading of every page (the service name in-process).
    pub fn with_title(mut self, title: &str) -> Self {
        self.title = title.into();
        self
    }

    pub(crate) fn with_dropped(mut self, dropped: Arc<dyn DroppedCount>) -> Self {
        self.dropped = Some(dropped);
        self
    }

    /// The store served.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one request (only `GET` and `HEAD`).
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        let relative = path
            .strip_prefix(&*self.base)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(path);
        let relative = relative.trim_end_matches('/');
        let params = html::Params::parse(query.unwrap_or(""));
        let page = html::Page {
            base: &self.base,
            title: &self.title,
            stats: self.store.stats(),
            dropped: self.dropped.as_ref().map_or(0, |d| d.dropped()),
        };
        match relative.split('/').skip(1).collect::<Vec<_>>().as_slice() {
            [] => {
                let query = params.trace_query();
                let traces = self.store.traces(&query);
                html_response(
                    StatusCode::OK,
                    page.index(&traces, &params, &self.store.services()),
                )
            }
            ["traces", id] => match self.store.trace(id) {
                Some(trace) => html_response(StatusCode::OK, page.trace(&trace)),
                None => html_response(StatusCode::NOT_FOUND, page.not_found(id)),
            },
            ["red"] => html_response(StatusCode::OK, page.red(&red(&self.store))),
            ["map"] => html_response(StatusCode::OK, page.map(&service_map(&self.store))),
            ["api", "traces"] => json(StatusCode::OK, &self.store.traces(&params.trace_query())),
            ["api", "traces", id] => match self.store.trace(id) {
                Some(trace) => json(StatusCode::OK, &trace),
                None => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({ "error": format!("no trace {id} in the ring") }),
                ),
            },
            ["api", "red"] => json(StatusCode::OK, &red(&self.store)),
            ["api", "map"] => json(StatusCode::OK, &service_map(&self.store)),
            ["api", "stats"] => json(
                StatusCode::OK,
                &serde_json::json!({ "store": self.store.stats(), "handoff_dropped": page.dropped }),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl<B> tower::Service<Request<B>> for ViewService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.respond(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        )))
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        status,
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

fn html_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, Bytes::from(body), "text/html; charset=utf-8")
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, Bytes::from(body), "application/json"),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode JSON\n"),
    }
}

fn respond(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    response
}
