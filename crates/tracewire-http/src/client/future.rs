use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::attempt::{Attempt, error_type_of};
use super::body::ResponseBody;

pin_project! {
    /// The response future of [`Client`](super::Client): polls the inner future with the
    /// attempt's context attached, records the response head or the error, and hands the
    /// attempt over to the [`ResponseBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        attempt: Option<Attempt>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, attempt: Attempt) -> Self {
        Self {
            inner,
            attempt: Some(attempt),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let guard = this
            .attempt
            .as_ref()
            .map(|attempt| attempt.context().clone().attach());
        let result = ready!(this.inner.poll(cx));
        drop(guard);
        let attempt = this.attempt.take();
        Poll::Ready(match result {
            Ok(response) => {
                let mut attempt = attempt;
                if let Some(attempt) = &mut attempt {
                    attempt.on_response(response.status(), response.version(), response.headers());
                }
                Ok(response.map(|body| ResponseBody::new(body, attempt)))
            }
            Err(error) => {
                if let Some(attempt) = attempt {
                    attempt.fail(error_type_of::<E>(), &error);
                }
                Err(error)
            }
        })
    }
}
