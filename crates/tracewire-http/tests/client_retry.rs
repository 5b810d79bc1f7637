//! Retries and redirects through the tower client layer: one CLIENT span per physical attempt,
//! all under the same parent, numbered by `http.request.resend_count`.

mod client_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get as get_route;
use bytes::Bytes;
use client_support::*;
use http_body_util::Full;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::Status;
use tower::retry::RetryLayer;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;
use tracewire_http::client::{ClientLayer, CountRedirects, CountResends, RetryPolicy};
use tracewire_test::{Capture, SpanDataExt};

fn fast_policy() -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[tokio::test]
async fn every_attempt_is_a_span_under_the_same_parent() {
    let capture = Capture::install();
    let script = Script::failing(2);
    let addr = serve(
        Router::new()
            .route("/users/{id}", get_route(scripted))
            .with_state(script.clone()),
    )
    .await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(fast_policy()))
        .layer(ClientLayer::new())
        .service(hyper_client());

    let parent = parent_context();
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/users/7", addr.port())))
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(read_body(response.into_body()).await, "ok");

    let spans = attempt_spans(&capture, "GET");
    assert_eq!(spans.len(), 3);
    for span in &spans {
        assert_eq!(span.parent_id(), span_id_of(&parent));
        assert_eq!(
            span.trace_id(),
            tracewire_test::trace_id_of(&parent),
            "one trace"
        );
    }
    assert_eq!(
        resend_counts(&spans),
        [None, Some("1".into()), Some("2".into())]
    );
    let statuses: Vec<_> = spans
        .iter()
        .map(|s| s.attr_str("http.response.status_code").unwrap())
        .collect();
    assert_eq!(statuses, ["503", "503", "200"]);
    assert!(spans[0].is_error() && spans[1].is_error());
    assert_eq!(spans[2].status, Status::Unset);
    let expected: Vec<_> = spans.iter().map(traceparent_of).collect();
    assert_eq!(
        script.traceparents(),
        expected,
        "each attempt carries its own span"
    );

    let points = capture.metric("http.client.request.duration");
    let total: f64 = points.iter().map(|p| p.count_or_value()).sum();
    assert_eq!(total, 3.0);
}

#[tokio::test]
async fn attempts_stop_at_the_bound_and_post_is_not_resent_on_503() {
    let capture = Capture::install();
    let script = Script::failing(10);
    let addr = serve(
        Router::new()
            .route("/users/{id}", get_route(scripted).post(scripted))
            .with_state(script.clone()),
    )
    .await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(fast_policy()))
        .layer(ClientLayer::new())
        .service(hyper_client());
    let url = format!("http://127.0.0.1:{}/users/7", addr.port());

    let response = client.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(response.status(), 503, "the last response is returned");
    read_body(response.into_body()).await;
    assert_eq!(capture.spans_named("GET").len(), 3);
    // Every request has its own budget of attempts.
    let response = client.clone().oneshot(get(&url)).await.unwrap();
    read_body(response.into_body()).await;
    assert_eq!(capture.spans_named("GET").len(), 6);

    let post = http::Request::post(&url)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client.oneshot(post).await.unwrap();
    assert_eq!(response.status(), 503);
    read_body(response.into_body()).await;
    assert_eq!(capture.spans_named("POST").len(), 1);
    assert_eq!(script.seen.lock().unwrap().len(), 7);
}

#[tokio::test]
async fn connect_errors_are_retried_and_numbered() {
    let capture = Capture::install();
    let port = closed_port();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(fast_policy()))
        .layer(ClientLayer::new())
        .service(hyper_client());
    let post = http::Request::post(format!("http://127.0.0.1:{port}/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let error = client.oneshot(post).await.unwrap_err();
    assert!(error.is_connect());
    let spans = attempt_spans(&capture, "POST");
    assert_eq!(
        resend_counts(&spans),
        [None, Some("1".into()), Some("2".into())]
    );
    assert!(spans.iter().all(|s| s.is_error()));
}

/// A policy of the user's own: retries any 503, up to twice more, no waiting.
#[derive(Clone)]
struct OwnPolicy(Arc<AtomicU32>);

impl<B: Clone, R, E> tower::retry::Policy<http::Request<B>, http::Response<R>, E> for OwnPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut http::Request<B>,
        result: &mut Result<http::Response<R>, E>,
    ) -> Option<Self::Future> {
        let is_503 = matches!(result, Ok(r) if r.status() == 503);
        (is_503 && self.0.fetch_add(1, Ordering::SeqCst) < 2).then(|| std::future::ready(()))
    }

    fn clone_request(&mut self, req: &http::Request<B>) -> Option<http::Request<B>> {
        // Rebuilt by hand: the extensions (and any counter in them) are not copied.
        let mut copy = http::Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }
}

#[tokio::test]
async fn count_resends_numbers_attempts_of_any_policy() {
    let capture = Capture::install();
    let script = Script::failing(2);
    let addr = serve(
        Router::new()
            .route("/users/{id}", get_route(scripted))
            .with_state(script.clone()),
    )
    .await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(CountResends::new(
            OwnPolicy(Arc::default()),
        )))
        .layer(ClientLayer::new())
        .service(hyper_client());
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/users/7", addr.port())))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_body(response.into_body()).await;
    let spans = attempt_spans(&capture, "GET");
    assert_eq!(
        resend_counts(&spans),
        [None, Some("1".into()), Some("2".into())]
    );
}

#[tokio::test]
async fn followed_redirects_count_as_resends() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = serve(
        Router::new()
            .route(
                "/old/{id}",
                get_route(|| async { Redirect::temporary("/users/7") }),
            )
            .route("/users/{id}", get_route(scripted))
            .with_state(script.clone()),
    )
    .await;
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::with_policy(CountRedirects::default()))
        .layer(ClientLayer::new())
        .service(hyper_client());

    let parent = parent_context();
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/old/7", addr.port())))
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_body(response.into_body()).await;

    let spans = attempt_spans(&capture, "GET");
    assert_eq!(spans.len(), 2);
    assert_eq!(resend_counts(&spans), [None, Some("1".into())]);
    assert_eq!(
        spans[0].attr_str("http.response.status_code").as_deref(),
        Some("307")
    );
    assert!(!spans[0].is_error(), "a redirect is not an error");
    assert!(spans[1].attr_str("url.full").unwrap().ends_with("/users/7"));
    assert!(spans.iter().all(|s| s.parent_id() == span_id_of(&parent)));
    assert_eq!(script.traceparents(), [traceparent_of(&spans[1])]);
}

#[tokio::test]
async fn redirects_and_retries_share_one_count() {
    let capture = Capture::install();
    let script = Script::failing(1);
    let addr = serve(
        Router::new()
            .route(
                "/old/{id}",
                get_route(|| async { Redirect::temporary("/users/7") }),
            )
            .route("/users/{id}", get_route(scripted))
            .with_state(script.clone()),
    )
    .await;
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::with_policy(CountRedirects::default()))
        .layer(RetryLayer::new(fast_policy()))
        .layer(ClientLayer::new())
        .service(hyper_client());
    let response = client
        .oneshot(get(&format!("http://127.0.0.1:{}/old/7", addr.port())))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_body(response.into_body()).await;
    let spans = attempt_spans(&capture, "GET");
    let hops = hops(&spans);
    assert_eq!(
        hops,
        [
            ("307".to_owned(), None),
            ("503".to_owned(), Some("1".to_owned())),
            ("200".to_owned(), Some("2".to_owned())),
        ]
    );
}
