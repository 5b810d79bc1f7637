use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tracewire_core::operation::Failure;

use super::body::ServerBody;
use super::finish::Exchange;

pin_project! {
    /// Response future of [`Server`](super::Server): attaches the request's context on every
    /// poll, then hands the request's operation to the response body.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Boxed: the futures and bodies around this one move it several times on the way
        // out, and a box moves as one pointer.
        exchange: Option<Box<Exchange>>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, exchange: Box<Exchange>) -> Self {
        Self {
            inner,
            exchange: Some(exchange),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display + 'static,
{
    type Output = Result<Response<ServerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _attached = this.exchange.as_ref().map(|e| e.context().clone().attach());
            ready!(this.inner.poll(cx))
        };
        let mut exchange = this.exchange.take();
        Poll::Ready(match result {
            Ok(mut response) => {
                if let Some(e) = exchange.as_mut() {
                    e.on_response(&mut response);
                }
                Ok(response.map(|body| ServerBody::new(body, exchange)))
            }
            Err(error) => {
                if let Some(mut e) = exchange {
                    e.fail(Failure::from_error(&error));
                    (*e).end();
                }
                Err(error)
            }
        })
    }
}
