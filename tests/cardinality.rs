//! Hostile paths and methods never create metric series beyond a bound.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Method, Request};
use rand::Rng;
use tower::ServiceExt;

/// A random string of `len` characters valid in a path segment or a method token.
fn random_token(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!$&'*+";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_paths_and_methods_stay_within_a_few_series() {
    let telemetry = tracewire::builder()
        .service_name("cardinality")
        .without_otlp()
        .log_writer(std::io::sink)
        .metric_cardinality_limit(500)
        .init()
        .expect("init");
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route_service("/metrics", telemetry.metrics_service())
        .layer(tracewire::http::ServerLayer::new());

    let mut rng = rand::rng();
    let mut sent_paths = BTreeSet::new();
    for i in 0..10_000 {
        let path = match i % 3 {
            0 => format!("/users/{}", random_token(&mut rng, 12)),
            _ => format!(
                "/{}/{}",
                random_token(&mut rng, 10),
                random_token(&mut rng, 8)
            ),
        };
        let method = if i % 2 == 0 {
            Method::from_bytes(random_token(&mut rng, 7).as_bytes()).unwrap_or(Method::PATCH)
        } else {
            Method::GET
        };
        sent_paths.insert(path.clone());
        let request = Request::builder()
            .method(method)
            .uri(&path)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().as_u16() < 500, "{}", response.status());
    }

    let metrics = telemetry.metrics_service().render();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .collect();
    // Routes: the one template, or none. Methods: GET, PATCH (a random token that is not a
    // valid method) or `_OTHER`. Statuses: 200, 404, 405.
    assert!(!series.is_empty(), "{metrics}");
    assert!(
        series.len() <= 2 * 3 * 3,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    let total: u64 = series
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        total, 10_000,
        "every request is counted in one of the few series"
    );
    for line in metrics.lines() {
        assert!(
            !line.contains("otel_metric_overflow"),
            "a hostile client reached the cardinality limit: {line}"
        );
    }
    for path in sent_paths.iter().take(200) {
        assert!(!metrics.contains(path.as_str()), "{path} became a label");
    }
    let methods: BTreeSet<&str> = series
        .iter()
        .filter_map(|l| l.split("http_request_method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        methods
            .iter()
            .all(|m| ["GET", "PATCH", "_OTHER"].contains(m)),
        "{methods:?}"
    );
    drop(telemetry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cardinality_limit_folds_extra_series_into_one_overflow_series() {
    let telemetry = tracewire::builder()
        .service_name("cardinality-limit")
        .without_otlp()
        .log_writer(std::io::sink)
        .metric_cardinality_limit(50)
        .init()
        .expect("init");
    // A user's own instrument with an unbounded attribute: the limit holds it.
    let counter = opentelemetry::global::meter("app")
        .u64_counter("app.lookups")
        .build();
    for i in 0..1_000 {
        counter.add(1, &[opentelemetry::KeyValue::new("key", format!("k{i}"))]);
    }
    let metrics = telemetry.metrics_service().render();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("app_lookups_total{"))
        .collect();
    // 50 attribute sets, plus the one overflow series.
    assert_eq!(series.len(), 51, "{} series", series.len());
    let overflow = series
        .iter()
        .find(|l| l.contains("otel_metric_overflow=\"true\""))
        .unwrap_or_else(|| panic!("no overflow series:\n{}", series.join("\n")));
    let total: u64 = series
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 1_000, "nothing lost: {overflow}");
    drop(telemetry);
}
