//! A ready `tower::retry` policy for HTTP clients, and resend counting for any other policy.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use tower::retry::Policy;

use super::ResendCounter;

/// A [`tower::retry::Policy`] for HTTP clients: bounded attempts with exponential backoff and
/// jitter, resend counting included.
///
/// It retries
/// - requests with an idempotent method (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`)
///   that got a `5xx` response (except `501 Not Implemented` and `505 HTTP Version Not
///   Supported`, which do not change on retry) or failed with any transport error;
/// - requests with any method that failed to connect (the request never left), as long as the
///   error's source chain shows it (an [`io::Error`] of kind `ConnectionRefused`,
///   `AddrNotAvailable`, `HostUnreachable` or `NetworkUnreachable`).
///
/// The wait before retry `n` (1, 2, …) is `base_delay * 2^(n-1)`, at most `max_delay`, then
/// scaled by a random factor in `[0.5, 1]` so clients that failed together do not retry
/// together. Defaults: 3 attempts in all, 100 ms base delay, 2 s maximum delay.
///
/// The request body must be `Clone` (`Full<Bytes>`, `Empty<Bytes>`, `String`, …): every
/// attempt sends its own copy. Each copy carries the request's [`ResendCounter`], so a
/// [`ClientLayer`](super::ClientLayer) *inside* the retry layer numbers the attempts:
///
/// ```
/// # use tower::ServiceBuilder;
/// # use tower::retry::RetryLayer;
/// use tracewire_http::client::{ClientLayer, RetryPolicy};
/// # fn wrap<S: Clone>(inner: S) {
/// let client = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryPolicy::new().max_attempts(4))) // outside: decides retries
///     .layer(ClientLayer::new()) // inside: one CLIENT span per attempt
///     .service(inner);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    /// Retries made so far for the request this copy of the policy follows.
    retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// 3 attempts in all, 100 ms base delay, 2 s maximum delay.
    pub fn new() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            retries: 0,
        }
    }

    /// At most `attempts` attempts in all, the first one included (`1` disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry (doubled for each further one) and the longest wait.
    pub fn backoff(mut self, base_delay: Duration, max_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self.max_delay = max_delay.max(base_delay);
        self
    }

    /// The wait before retry number `retry` (1-based), before jitter.
    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    fn should_retry<B, E>(method: &Method, result: &Result<Response<B>, E>) -> bool
    where
        E: StdError + 'static,
    {
        match result {
            Ok(response) => is_idempotent(method) && is_retryable_status(response.status()),
            Err(error) => is_idempotent(method) || is_connect_error(error),
        }
    }
}

impl<ReqBody, ResBody, E> Policy<Request<ReqBody>, Response<ResBody>, E> for RetryPolicy
where
    ReqBody: Clone,
    E: StdError + 'static,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut Request<ReqBody>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        if self.retries + 1 >= self.max_attempts || !Self::should_retry(request.method(), result) {
            return None;
        }
        self.retries += 1;
        let delay = self
            .delay(self.retries)
            .mul_f64(rand::random_range(0.5..=1.0));
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &Request<ReqBody>) -> Option<Request<ReqBody>> {
        if self.max_attempts <= 1 {
            return None;
        }
        let mut copy = request.clone();
        ResendCounter::carry_over(request.extensions(), copy.extensions_mut());
        Some(copy)
    }
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2), so a request may be sent again.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        && status != StatusCode::NOT_IMPLEMENTED
        && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED
}

/// Whether `error` (or an error in its source chain) is a failure to connect, so the request
/// was never sent.
pub fn is_connect_error(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Wraps any [`tower::retry::Policy`] over HTTP requests so the copies it makes carry the
/// request's [`ResendCounter`]: put a [`ClientLayer`](super::ClientLayer) inside the retry
/// layer and its attempts are numbered, whatever the policy.
///
/// ```
/// # use tower::retry::RetryLayer;
/// use tracewire_http::client::CountResends;
/// # #[derive(Clone)] struct MyPolicy;
/// # fn demo(my_policy: MyPolicy) {
/// let retry = RetryLayer::new(CountResends::new(my_policy));
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct CountResends<P> {
    inner: P,
}

impl<P> CountResends<P> {
    /// Wraps `policy`.
    pub fn new(policy: P) -> Self {
        Self { inner: policy }
    }

    /// The wrapped policy.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

impl<P, ReqBody, Res, E> Policy<Request<ReqBody>, Res, E> for CountResends<P>
where
    P: Policy<Request<ReqBody>, Res, E>,
{
    type Future = P::Future;

    fn retry(
        &mut self,
        request: &mut Request<ReqBody>,
        result: &mut Result<Res, E>,
    ) -> Option<Self::Future> {
        self.inner.retry(request, result)
    }

    fn clone_request(&mut self, request: &Request<ReqBody>) -> Option<Request<ReqBody>> {
        let mut copy = self.inner.clone_request(request)?;
        ResendCounter::carry_over(request.extensions(), copy.extensions_mut());
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::new().backoff(Duration::from_millis(10), Duration::from_millis(50));
        let delays: Vec<u128> = (1..=5).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        assert_eq!(p.delay(200), Duration::from_millis(50));
    }

    #[test]
    fn what_is_retried() {
        let ok = |s: u16| -> Result<Response<()>, io::Error> {
            Ok(Response::builder().status(s).body(()).unwrap())
        };
        assert!(RetryPolicy::should_retry(&Method::GET, &ok(503)));
        assert!(!RetryPolicy::should_retry(&Method::GET, &ok(501)));
        assert!(!RetryPolicy::should_retry(&Method::GET, &ok(404)));
        assert!(!RetryPolicy::should_retry(&Method::POST, &ok(503)));
        let refused: Result<Response<()>, io::Error> =
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        let reset: Result<Response<()>, io::Error> =
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert!(RetryPolicy::should_retry(&Method::POST, &refused));
        assert!(!RetryPolicy::should_retry(&Method::POST, &reset));
        assert!(RetryPolicy::should_retry(&Method::PUT, &reset));
    }

    #[test]
    fn attempts_are_bounded() {
        let mut p = RetryPolicy::new()
            .max_attempts(3)
            .backoff(Duration::ZERO, Duration::ZERO);
        let mut req = Request::get("http://h/").body(()).unwrap();
        let mut res: Result<Response<()>, io::Error> =
            Ok(Response::builder().status(503).body(()).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _enter = rt.enter();
        assert!(p.retry(&mut req, &mut res).is_some());
        assert!(p.retry(&mut req, &mut res).is_some());
        assert!(p.retry(&mut req, &mut res).is_none());
    }

    #[test]
    fn connect_errors_are_found_in_the_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert!(is_connect_error(&e));
        let e = Outer(io::Error::other("x"));
        assert!(!is_connect_error(&e));
    }
}
