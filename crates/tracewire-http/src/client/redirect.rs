//! Resend counting for redirects followed by tower-http's `FollowRedirect`.

use http::Request;
use tower_http::follow_redirect::policy::{Action, Attempt, Policy, Standard};

use super::ResendCounter;

/// Wraps a tower-http [`FollowRedirect`](tower_http::follow_redirect::FollowRedirect) policy
/// so each redirected request carries the original request's [`ResendCounter`]: with a
/// [`ClientLayer`](super::ClientLayer) inside `FollowRedirect`, every hop is its own CLIENT span
/// and the hops after the first have `http.request.resend_count` 1, 2, …, as the semantic
/// conventions ask for redirects.
///
/// ```
/// # use tower::ServiceBuilder;
/// use tower_http::follow_redirect::FollowRedirectLayer;
/// use tracewire_http::client::{ClientLayer, CountRedirects};
/// # fn wrap<S: Clone>(inner: S) {
/// let client = ServiceBuilder::new()
///     .layer(FollowRedirectLayer::with_policy(CountRedirects::default()))
///     .layer(ClientLayer::new())
///     .service(inner);
/// # }
/// ```
///
/// `FollowRedirect` rebuilds each redirected request without the original's extensions; this
/// policy puts the counter back.
#[derive(Debug, Clone)]
pub struct CountRedirects<P = Standard> {
    inner: P,
    /// The counter of the request this copy of the policy follows (set on its first request).
    counter: Option<ResendCounter>,
}

impl Default for CountRedirects<Standard> {
    /// Counts the hops of tower-http's standard policy (at most 20 redirects, no
    /// cross-origin `authorization`/`cookie` headers... as `Standard` decides).
    fn default() -> Self {
        Self::new(Standard::default())
    }
}

impl<P> CountRedirects<P> {
    /// Wraps `policy`.
    pub fn new(policy: P) -> Self {
        Self {
            inner: policy,
            counter: None,
        }
    }
}

impl<P, B, E> Policy<B, E> for CountRedirects<P>
where
    P: Policy<B, E>,
{
    fn redirect(&mut self, attempt: &Attempt<'_>) -> Result<Action, E> {
        self.inner.redirect(attempt)
    }

    fn on_request(&mut self, request: &mut Request<B>) {
        self.inner.on_request(request);
        let counter = match &self.counter {
            Some(counter) => counter.clone(),
            None => {
                let counter = request
                    .extensions()
                    .get::<ResendCounter>()
                    .cloned()
                    .unwrap_or_default();
                self.counter = Some(counter.clone());
                counter
            }
        };
        request.extensions_mut().insert(counter);
    }

    fn clone_body(&self, body: &B) -> Option<B> {
        self.inner.clone_body(body)
    }
}
