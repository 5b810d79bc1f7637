use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::attempt::{Attempt, error_type_of};

pin_project! {
    /// The response body of an instrumented client: the inner body, unchanged, holding the
    /// attempt's span open until the body has been read to its end, has failed, or is dropped
    /// — whichever comes first; the span ends and the duration is recorded exactly once.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        attempt: Option<Attempt>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, attempt: Option<Attempt>) -> Self {
        Self { inner, attempt }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body; the attempt ends now.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(attempt) = this.attempt.take() {
                    attempt.end();
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(attempt) = this.attempt.take() {
                    attempt.fail(error_type_of::<B::Error>(), error);
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // The last frame: a gRPC call ends with its trailers.
                    if let Some(mut attempt) = this.attempt.take() {
                        attempt.on_trailers(trailers);
                        attempt.end();
                    }
                } else if this.inner.is_end_stream()
                    && let Some(attempt) = this.attempt.take()
                {
                    attempt.end();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
