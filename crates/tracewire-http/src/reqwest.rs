//! An adapter for [`reqwest-middleware`](reqwest_middleware): the same CLIENT spans, context
//! injection, `http.client.request.duration` metric and resend counting as
//! [`ClientLayer`](crate::client::ClientLayer), for `reqwest` clients.
//!
//! Add [`ClientMiddleware`] *after* the retry middleware, so it sits inside it and sees every
//! attempt: the second attempt's span has `http.request.resend_count = 1`, the third `2`, all
//! under the same parent. The count lives in the middleware chain's extensions, which
//! `reqwest-retry` hands to every attempt, so nothing needs to be passed around.
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
//! use tracewire_http::reqwest::ClientMiddleware;
//!
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryTransientMiddleware::new_with_policy(
//!         ExponentialBackoff::builder().build_with_max_retries(2),
//!     ))
//!     .with(ClientMiddleware::new()) // inside the retries: one span per attempt
//!     .build();
//! # let _ = client;
//! ```
//!
//! The span ends when the response body has been read to its end, has failed or has been
//! dropped.
//!
//! # Redirects
//!
//! `reqwest` follows redirects itself, below the middleware stack, so by default a redirected
//! request is one span whose `url.full` is the first URL. The semantic conventions count each
//! followed redirect as a resend: build the client with `reqwest::redirect::Policy::none()` and
//! add [`FollowRedirects`] before (outside) [`ClientMiddleware`]; every hop is then its own
//! span, numbered with the retries in one count.
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use tracewire_http::reqwest::{ClientMiddleware, FollowRedirects};
//!
//! let client = ClientBuilder::new(
//!     reqwest::Client::builder()
//!         .redirect(reqwest::redirect::Policy::none())
//!         .build()
//!         .expect("a client without TLS settings builds"),
//! )
//! .with(FollowRedirects::new(10))
//! .with(ClientMiddleware::new())
//! .build();
//! # let _ = client;
//! ```

use std::borrow::Cow;

use http::Extensions;
use opentelemetry::Context;
use opentelemetry::context::FutureExt;
use reqwest::ResponseBuilderExt;
use reqwest_middleware::{Middleware, Next};

use crate::client::{Attempt, Instruments, ResendCounter, ResponseBody};

/// A `reqwest-middleware` middleware that instruments every request it passes on. See the
/// [module documentation](self).
///
/// Build it after `tracewire::init()`: the tracer and the histogram are taken from the global
/// providers once, here.
#[derive(Debug, Clone)]
pub struct ClientMiddleware {
    instruments: Instruments,
}

impl Default for ClientMiddleware {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientMiddleware {
    /// A middleware recording through the globally installed tracer and meter providers.
    pub fn new() -> Self {
        Self {
            instruments: Instruments::from_globals(),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for ClientMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let counter = match extensions.get::<ResendCounter>() {
            Some(counter) => counter.clone(),
            None => {
                let counter = ResendCounter::new();
                extensions.insert(counter.clone());
                counter
            }
        };
        let resend_count = counter.next_attempt();
        let mut attempt = Context::map_current(|parent| {
            let url = request.url();
            let target = crate::client::Target {
                method: request.method(),
                host: url.host_str(),
                port: url.port_or_known_default(),
                url: Some(Cow::Borrowed(url.as_str())),
            };
            Attempt::start(&self.instruments, parent, target, resend_count)
        });
        crate::propagation::inject_headers(attempt.context(), request.headers_mut());
        let result = next
            .run(request, extensions)
            .with_context(attempt.context().clone())
            .await;
        match result {
            Ok(response) => {
                attempt.on_response(response.status(), response.version(), response.headers());
                Ok(wrap_response(response, attempt))
            }
            Err(error) => {
                attempt.fail(error_type(&error), &error);
                Err(error)
            }
        }
    }
}

/// A `reqwest-middleware` middleware that follows redirects itself, so each hop passes
/// through the middlewares after it — [`ClientMiddleware`] records one span per hop, with
/// `http.request.resend_count`. Use it with a client whose own redirect policy is
/// `reqwest::redirect::Policy::none()`. See the [module documentation](self#redirects).
///
/// Like browsers and `reqwest`'s own policy: `301`/`302` turn a `POST` into a body-less `GET`,
/// `303` turns anything but `HEAD` into a `GET`, `307`/`308` resend the same method and body;
/// `authorization`, `cookie` and `proxy-authorization` are not sent to another origin. A
/// request whose body cannot be copied (a stream), a redirect without a usable `Location`, or
/// one past the limit is returned to the caller as it is.
#[derive(Debug, Clone)]
pub struct FollowRedirects {
    max: usize,
}

impl FollowRedirects {
    /// Follows at most `max` redirects per request.
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl Default for FollowRedirects {
    /// At most 10 redirects, as `reqwest` does.
    fn default() -> Self {
        Self::new(10)
    }
}

#[async_trait::async_trait]
impl Middleware for FollowRedirects {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        use http::{Method, StatusCode, header};
        // One counter for every hop (and every retry inside them).
        if extensions.get::<ResendCounter>().is_none() {
            extensions.insert(ResendCounter::new());
        }
        let mut hops = 0;
        loop {
            let copy = request.try_clone();
            let response = next.clone().run(request, extensions).await?;
            let status = response.status();
            if hops >= self.max || !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| response.url().join(l).ok());
            let (Some(location), Some(mut next_request)) = (location, copy) else {
                return Ok(response);
            };
            let to_get = match status {
                StatusCode::SEE_OTHER => next_request.method() != Method::HEAD,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => {
                    next_request.method() == Method::POST
                }
                _ => false,
            };
            if to_get {
                *next_request.method_mut() = Method::GET;
                *next_request.body_mut() = None;
                let headers = next_request.headers_mut();
                for name in [
                    header::CONTENT_LENGTH,
                    header::CONTENT_TYPE,
                    header::CONTENT_ENCODING,
                    header::TRANSFER_ENCODING,
                ] {
                    headers.remove(name);
                }
            }
            if location.origin() != next_request.url().origin() {
                let headers = next_request.headers_mut();
                for name in [
                    header::AUTHORIZATION,
                    header::COOKIE,
                    header::PROXY_AUTHORIZATION,
                ] {
                    headers.remove(name);
                }
            }
            *next_request.url_mut() = location;
            // Ends the hop's span before the next hop starts.
            drop(response);
            request = next_request;
            hops += 1;
        }
    }
}

/// `error.type` of a failed request.
fn error_type(error: &reqwest_middleware::Error) -> &'static str {
    match error {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
        reqwest_middleware::Error::Reqwest(_) => "reqwest::Error",
        reqwest_middleware::Error::Middleware(_) => "reqwest_middleware::Error",
    }
}

/// The same response with its body wrapped so the attempt ends with the body. `reqwest`'s
/// conversions through `http::Response` drop the response URL, so it is put back.
fn wrap_response(response: reqwest::Response, attempt: Attempt) -> reqwest::Response {
    let url = response.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    if let Ok(marker) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(marker.into_parts().0.extensions);
    }
    let body = reqwest::Body::wrap(ResponseBody::new(body, Some(attempt)));
    reqwest::Response::from(http::Response::from_parts(parts, body))
}
