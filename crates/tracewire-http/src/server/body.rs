use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tracewire_core::operation::Failure;

use super::finish::Exchange;

pin_project! {
    /// Response body of an instrumented request. The request's span and duration end when
    /// this body reaches its end, fails, or is dropped — whichever happens first, once.
    pub struct ServerBody<B> {
        #[pin]
        inner: B,
        exchange: Option<Box<Exchange>>,
    }
}

impl<B> fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBody").finish_non_exhaustive()
    }
}

impl<B> ServerBody<B> {
    pub(crate) fn new(inner: B, exchange: Option<Box<Exchange>>) -> Self {
        Self { inner, exchange }
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body,
    B::Error: fmt::Display + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // Streaming bodies produce their data here: keep the request's context attached. A body
        // at its end has nothing left to produce (its next frame is `None`): no need.
        let _attached = if this.inner.is_end_stream() {
            None
        } else {
            this.exchange.as_ref().map(|e| e.context().clone().attach())
        };
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            None => {
                if let Some(e) = this.exchange.take() {
                    (*e).end();
                }
            }
            Some(Err(error)) => {
                if let Some(mut e) = this.exchange.take() {
                    e.fail(Failure::from_error(error));
                    (*e).end();
                }
            }
            Some(Ok(frame)) => {
                // Trailers are the last frame: a gRPC call ends with them.
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut e) = this.exchange.take()
                {
                    e.on_trailers(trailers);
                    (*e).end();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
