//! The `reqwest-middleware` adapter against real loopback servers.

mod client_support;

use std::time::Duration;

use axum::Router;
use axum::routing::get as get_route;
use client_support::*;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{SpanKind, Status};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use tracewire_http::reqwest::ClientMiddleware;
use tracewire_test::{Capture, SpanDataExt};

fn retrying_client() -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy(
            ExponentialBackoff::builder()
                .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
                .build_with_max_retries(2),
        ))
        .with(ClientMiddleware::new())
        .build()
}

async fn scripted_server(script: &Script) -> std::net::SocketAddr {
    serve(
        Router::new()
            .route("/users/{id}", get_route(scripted))
            .with_state(script.clone()),
    )
    .await
}

#[tokio::test]
async fn a_request_gets_a_client_span_that_ends_with_the_body() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = scripted_server(&script).await;
    let client = retrying_client();
    let url = format!("http://127.0.0.1:{}/users/7?token=s3cret", addr.port());

    let parent = parent_context();
    let response = client
        .get(&url)
        .header(
            "traceparent",
            "00-11111111111111111111111111111111-1111111111111111-01",
        )
        .send()
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.url().as_str(), url, "the response URL is kept");
    assert!(capture.spans_named("GET").is_empty());
    assert_eq!(response.text().await.unwrap(), "ok");

    let span = capture.span("GET");
    assert_eq!(span.kind(), SpanKind::Client);
    assert_eq!(span.parent_id(), span_id_of(&parent));
    assert_eq!(
        span.attr_str("server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(span.attr_str("server.port"), Some(addr.port().to_string()));
    assert_eq!(
        span.attr_str("url.full"),
        Some(format!(
            "http://127.0.0.1:{}/users/7?token=REDACTED",
            addr.port()
        ))
    );
    assert_eq!(
        span.attr_str("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(span.attr("http.request.resend_count"), None);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        script.traceparents(),
        [traceparent_of(&span)],
        "stale value replaced"
    );

    let points = capture.metric("http.client.request.duration");
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].attr("http.request.method"), Some("GET"));
    assert_eq!(points[0].attr("http.response.status_code"), Some("200"));
    assert_eq!(points[0].count_or_value(), 1.0);
}

#[tokio::test]
async fn reqwest_retry_attempts_are_numbered_under_one_parent() {
    let capture = Capture::install();
    let script = Script::failing(2);
    let addr = scripted_server(&script).await;
    let client = retrying_client();

    let parent = parent_context();
    let response = client
        .get(format!("http://127.0.0.1:{}/users/7", addr.port()))
        .send()
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    let spans = attempt_spans(&capture, "GET");
    let seen = hops(&spans);
    assert_eq!(
        seen,
        [
            ("503".to_owned(), None),
            ("503".to_owned(), Some("1".to_owned())),
            ("200".to_owned(), Some("2".to_owned())),
        ]
    );
    assert!(spans.iter().all(|s| s.parent_id() == span_id_of(&parent)));
    assert!(spans[0].is_error() && spans[1].is_error() && !spans[2].is_error());
    let expected: Vec<_> = spans.iter().map(traceparent_of).collect();
    assert_eq!(script.traceparents(), expected);
}

#[tokio::test]
async fn a_connect_error_is_recorded_and_returned() {
    let capture = Capture::install();
    let port = closed_port();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ClientMiddleware::new())
        .build();
    let error = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    let span = capture.span("GET");
    assert_eq!(span.attr_str("error.type").as_deref(), Some("connect"));
    assert!(span.is_error());
    let points = capture.metric("http.client.request.duration");
    assert_eq!(points[0].attr("error.type"), Some("connect"));
}

#[tokio::test]
async fn followed_redirects_are_hops_numbered_with_the_retries() {
    use axum::response::Redirect;
    use tracewire_http::reqwest::FollowRedirects;

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
    let client = ClientBuilder::new(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    )
    .with(FollowRedirects::default())
    .with(RetryTransientMiddleware::new_with_policy(
        ExponentialBackoff::builder()
            .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
            .build_with_max_retries(2),
    ))
    .with(ClientMiddleware::new())
    .build();

    let parent = parent_context();
    let response = client
        .get(format!("http://127.0.0.1:{}/old/7", addr.port()))
        .send()
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.url().path().ends_with("/users/7"));
    response.bytes().await.unwrap();

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
    assert!(spans.iter().all(|s| s.parent_id() == span_id_of(&parent)));
    assert!(!spans[0].is_error(), "a redirect is not an error");
    assert!(spans[2].attr_str("url.full").unwrap().ends_with("/users/7"));
}

#[tokio::test]
async fn redirects_to_another_origin_drop_credentials_and_303_turns_post_into_get() {
    use axum::response::Redirect;
    use tracewire_http::reqwest::FollowRedirects;

    let capture = Capture::install();
    let other = Script::default();
    let other_addr = serve(
        Router::new()
            .route("/users/{id}", get_route(scripted))
            .with_state(other.clone()),
    )
    .await;
    let target = format!("http://127.0.0.1:{}/users/7", other_addr.port());
    let addr = serve(Router::new().route(
        "/submit",
        axum::routing::post(move || {
            let target = target.clone();
            async move { Redirect::to(&target) }
        }),
    ))
    .await;
    let client = ClientBuilder::new(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    )
    .with(FollowRedirects::new(5))
    .with(ClientMiddleware::new())
    .build();
    let response = client
        .post(format!("http://127.0.0.1:{}/submit", addr.port()))
        .header("authorization", "Bearer s3cret")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    let post = capture.span("POST");
    let get = capture.span("GET");
    assert_eq!(
        post.attr_str("http.response.status_code").as_deref(),
        Some("303")
    );
    assert_eq!(
        get.attr_str("http.request.resend_count").as_deref(),
        Some("1")
    );
    let seen = other.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].get("authorization").is_none(), "{:?}", seen[0]);
    assert!(seen[0].get("content-type").is_none());
    drop(seen);
    assert_eq!(other.traceparents(), [traceparent_of(&get)]);
}
