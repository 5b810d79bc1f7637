//! The reference: what a user writes by hand with the OpenTelemetry SDK alone. Extracts the
//! parent with the SDK's `TraceContextPropagator`, starts one server span with five
//! attributes, runs the handler under its context and ends the span on the response.
//!
//! Used by the server bench (`benches/server.rs`) and the load test's target
//! (`benches/load_target.rs`) as the peer every figure of `ServerLayer` is compared with.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::{HeaderMap, Request, Response};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The hand-written layer: wraps a service in [`Service`].
#[derive(Clone, Debug)]
pub struct Layer {
    /// The SDK tracer the server spans are started with.
    pub tracer: SdkTracer,
}

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;
    fn layer(&self, inner: S) -> Service<S> {
        Service {
            inner,
            tracer: self.tracer.clone(),
            propagator: TraceContextPropagator::new(),
        }
    }
}

/// A service wrapped by [`Layer`].
#[derive(Clone, Debug)]
pub struct Service<S> {
    inner: S,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl<S, B, RB> tower::Service<Request<B>> for Service<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let parent = self.propagator.extract(&Headers(req.headers()));
        let attributes = vec![
            KeyValue::new("http.request.method", req.method().as_str().to_owned()),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new(
                "user_agent.original",
                req.headers()
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            ),
        ];
        let span = self
            .tracer
            .span_builder(format!("{} {}", req.method(), req.uri().path()))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let cx = Context::new().with_span(span);
        let fut = self.inner.call(req).with_context(cx.clone());
        Box::pin(async move {
            let result = fut.await;
            let span = cx.span();
            if let Ok(resp) = &result {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(resp.status().as_u16()),
                ));
            }
            span.end();
            result
        })
    }
}
