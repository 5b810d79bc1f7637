//! Tail sampling, consistent ratios, synthetic traces, breadcrumbs and exemplars, checked as a
//! user checks them: real service processes, an OTLP receiver, `/metrics`, a real Prometheus.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Service;
use common::prometheus::Prometheus;
use common::{get, trace_id_of};
use tracewire_test::{OtlpReceiver, ReceivedSpan};

fn quickstart(env: &[(&str, &str)]) -> Service {
    Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        env,
    )
}

/// The value of the first `/metrics` sample named `name` whose labels include all `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|lbl| l.contains(lbl))
        })
        .and_then(|l| l.split(" # ").next())
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn by_trace(spans: &[ReceivedSpan]) -> BTreeMap<String, Vec<ReceivedSpan>> {
    let mut traces: BTreeMap<String, Vec<ReceivedSpan>> = BTreeMap::new();
    for span in spans {
        traces
            .entry(span.trace_id.clone())
            .or_default()
            .push(span.clone());
    }
    traces
}

/// Waits until no new span has arrived for a while, and returns them all.
async fn settled_spans(receiver: &OtlpReceiver, at_least: usize) -> Vec<ReceivedSpan> {
    let mut spans = receiver
        .wait_for_spans(at_least, Duration::from_secs(30))
        .await;
    loop {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let now = receiver.spans();
        if now.len() == spans.len() {
            return now;
        }
        spans = now;
    }
}

/// The acceptance scenario: ratio 0, slow at 100 ms, 300 ordinary, 20 failing and 10
/// slow requests without an incoming trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_at_ratio_zero_exports_failing_and_slow_traces_whole_with_exemplars() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "quickstart-sampling"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("TRACEWIRE_SAMPLING_RATIO", "0"),
        ("TRACEWIRE_SAMPLING_SLOW", "100ms"),
    ]);

    let mut kept_by_client = BTreeSet::new();
    let mut ordinary = BTreeSet::new();
    for id in 1..=300 {
        let answer = get(&app.url(&format!("/users/{id}")), &[]).await;
        assert_eq!(answer.status, 200);
        let traceparent = answer.headers["traceparent"].to_str().unwrap();
        assert!(traceparent.ends_with("-00"), "decided later: {traceparent}");
        ordinary.insert(trace_id_of(traceparent).to_owned());
    }
    let mut failing = BTreeSet::new();
    for _ in 0..20 {
        let answer = get(&app.url("/fail"), &[]).await;
        assert_eq!(answer.status, 500);
        let id = trace_id_of(answer.headers["traceparent"].to_str().unwrap()).to_owned();
        failing.insert(id.clone());
        kept_by_client.insert(id);
    }
    let mut slow = BTreeSet::new();
    for _ in 0..10 {
        let answer = get(&app.url("/slow?ms=150"), &[]).await;
        assert_eq!(answer.status, 200);
        let id = trace_id_of(answer.headers["traceparent"].to_str().unwrap()).to_owned();
        slow.insert(id.clone());
        kept_by_client.insert(id);
    }
    assert_eq!(ordinary.len(), 300);
    assert_eq!(kept_by_client.len(), 30);

    // Exported: the 30 failing and slow traces, whole; none of the 300 ordinary ones.
    let spans = settled_spans(&receiver, 60).await;
    let traces = by_trace(&spans);
    let exported: BTreeSet<String> = traces.keys().cloned().collect();
    let requests: BTreeSet<String> = traces
        .iter()
        .filter(|(_, spans)| !spans.iter().any(|s| s.name == "GET /metrics"))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(requests, kept_by_client, "exported traces: {traces:#?}");
    assert!(exported.is_disjoint(&ordinary));
    assert!(
        !spans
            .iter()
            .any(|s| ["GET /users/{id}", "load_user", "fetch_profile"].contains(&s.name.as_str())),
        "an ordinary trace leaked"
    );
    for id in &failing {
        let spans = &traces[id];
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let server = spans.iter().find(|s| s.name == "GET /fail").unwrap();
        let child = spans.iter().find(|s| s.name == "check_database").unwrap();
        assert_eq!(server.status_code, 2);
        assert_eq!(child.parent_span_id, server.span_id);
        assert_eq!(child.status_code, 2);
    }
    for id in &slow {
        let spans = &traces[id];
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let server = spans.iter().find(|s| s.name == "GET /slow").unwrap();
        let child = spans.iter().find(|s| s.name == "wait").unwrap();
        assert_eq!(child.parent_span_id, server.span_id);
        assert_eq!(server.attributes["http.response.status_code"], "200");
    }

    // Metrics are never sampled: /metrics counts all 330 requests.
    let metrics = get(&app.url("/metrics"), &[]).await.body;
    let count = |route: &str, status: &str| {
        sample(
            &metrics,
            "http_server_request_duration_seconds_count",
            &[
                &format!("http_route=\"{route}\""),
                &format!("http_response_status_code=\"{status}\""),
            ],
        )
    };
    assert_eq!(count("/users/{id}", "200"), Some(300.0), "{metrics}");
    assert_eq!(count("/fail", "500"), Some(20.0));
    assert_eq!(count("/slow", "200"), Some(10.0));
    assert_eq!(
        sample(
            &metrics,
            "tracewire_sampling_decisions_total",
            &["decision=\"error\""]
        ),
        Some(20.0)
    );
    assert!(
        sample(
            &metrics,
            "tracewire_sampling_decisions_total",
            &["decision=\"dropped\""]
        )
        .unwrap()
            >= 300.0
    );
    assert!(!metrics.contains(" # {"), "classic format has no exemplars");

    // OpenMetrics on request: exemplars on the buckets, pointing at exported traces only.
    let open = get(
        &app.url("/metrics"),
        &[("accept", "application/openmetrics-text;version=1.0.0")],
    )
    .await;
    assert!(
        open.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.body.ends_with("# EOF\n"));
    let exemplar_lines: Vec<&str> = open
        .body
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket") && l.contains(" # {")
        })
        .collect();
    assert!(!exemplar_lines.is_empty(), "{}", open.body);
    for line in &exemplar_lines {
        let id = line
            .split("trace_id=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            exported.contains(id),
            "exemplar of an unexported trace: {line}"
        );
    }
    assert!(
        exemplar_lines
            .iter()
            .any(|l| l.contains("http_route=\"/fail\""))
    );
    assert!(
        exemplar_lines
            .iter()
            .any(|l| l.contains("http_route=\"/slow\""))
    );
    assert!(
        open.body
            .lines()
            .any(|l| l.starts_with("function_calls_duration_seconds_bucket")
                && l.contains("function=\"check_database\"")
                && l.contains(" # {trace_id=\"")),
        "no #[traced] exemplar: {}",
        open.body
    );
    // Same series as the classic format.
    let series = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                l.split(" # ")
                    .next()
                    .unwrap()
                    .rsplit_once(' ')
                    .unwrap()
                    .0
                    .to_owned()
            })
            .filter(|s| !s.starts_with("http_server") && !s.starts_with("tracewire_sampling"))
            .collect()
    };
    assert_eq!(series(&open.body), series(&metrics));

    // OTLP: the histogram data points carry the same kind of exemplars.
    let deadline = Instant::now() + Duration::from_secs(20);
    let otlp = loop {
        let found: Vec<_> = receiver
            .metric_exemplars()
            .into_iter()
            .filter(|e| e.name == "http.server.request.duration")
            .collect();
        if found
            .iter()
            .any(|e| e.attributes.get("http.route").map(String::as_str) == Some("/slow"))
            || Instant::now() > deadline
        {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!otlp.is_empty(), "no exemplar over OTLP");
    for e in &otlp {
        assert!(
            exported.contains(&e.trace_id),
            "OTLP exemplar of an unexported trace: {e:?}"
        );
        let span = spans
            .iter()
            .find(|s| s.span_id == e.span_id)
            .expect("exemplar span exported");
        assert_eq!(span.attributes["http.route"], e.attributes["http.route"]);
    }
    let slow_exemplar = otlp
        .iter()
        .find(|e| e.attributes["http.route"] == "/slow")
        .expect("an exemplar for /slow");
    assert!(slow_exemplar.value >= 0.15, "{slow_exemplar:?}");

    // A real Prometheus with exemplar storage scrapes the service and returns the exemplars.
    let prometheus = Prometheus::start(&app.addr).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let data = prometheus
            .query_exemplars("http_server_request_duration_seconds_bucket")
            .await;
        let ids: Vec<String> = data
            .iter()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
            .collect();
        if !ids.is_empty() || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !stored.is_empty(),
        "Prometheus stored no exemplar: {}",
        prometheus.log()
    );
    for id in &stored {
        assert!(
            exported.contains(id),
            "Prometheus exemplar of an unexported trace {id}"
        );
    }
    // The series Prometheus stored from the OpenMetrics scrape have today's names.
    let users = prometheus
        .query("http_server_request_duration_seconds_count{http_route=\"/users/{id}\"}")
        .await;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["value"][1], "300");
    drop(prometheus);

    let status = app.terminate();
    assert!(status.success());
}

/// Two services sampling at 0.25 keep exactly the same traces: the downstream one ignores
/// the incoming decision and decides from the trace id alone, and still agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_at_a_quarter_keep_the_same_traces() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let common_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("TRACEWIRE_SAMPLING_RATIO", "0.25"),
        ("TRACEWIRE_SAMPLING_SLOW", "30s"),
    ];
    let mut upstream_env = common_env.to_vec();
    upstream_env.extend([
        ("OTEL_SERVICE_NAME", "upstream"),
        ("TRACEWIRE_SAMPLING_PARENT_BASED", "false"),
    ]);
    let upstream = quickstart(&upstream_env);
    let upstream_url = format!("http://{}", upstream.addr);
    let mut gateway_env = common_env.to_vec();
    gateway_env.extend([
        ("OTEL_SERVICE_NAME", "gateway"),
        ("UPSTREAM_URL", upstream_url.as_str()),
    ]);
    let gateway = Service::start(
        env!("CARGO_BIN_EXE_gateway"),
        "gateway listening",
        &gateway_env,
    );

    let mut sampled = BTreeSet::new();
    let mut all = BTreeSet::new();
    for id in 1..=200 {
        let answer = get(&gateway.url(&format!("/users/{id}")), &[]).await;
        assert_eq!(answer.status, 200);
        let traceparent = answer.headers["traceparent"].to_str().unwrap().to_owned();
        let trace_id = trace_id_of(&traceparent).to_owned();
        if traceparent.ends_with("-01") {
            sampled.insert(trace_id.clone());
        }
        all.insert(trace_id);
    }
    assert_eq!(all.len(), 200);
    assert!(gateway.terminate().success());
    assert!(upstream.terminate().success());

    let spans = receiver.spans();
    let of = |service: &str| -> BTreeSet<String> {
        spans
            .iter()
            .filter(|s| s.resource["service.name"] == service && s.name != "GET /metrics")
            .map(|s| s.trace_id.clone())
            .collect()
    };
    let gateway_kept = of("gateway");
    let upstream_kept = of("upstream");
    assert_eq!(
        gateway_kept, upstream_kept,
        "the two services kept different traces"
    );
    assert_eq!(
        gateway_kept, sampled,
        "the response flag tells which traces were kept"
    );
    assert!(
        (20..=90).contains(&gateway_kept.len()),
        "{} of 200 kept at 0.25",
        gateway_kept.len()
    );
    // Kept whole: the gateway's server and client spans and the upstream's three spans.
    for id in &gateway_kept {
        let names: BTreeSet<&str> = spans
            .iter()
            .filter(|s| &s.trace_id == id)
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            names.contains("GET /users/{id}")
                && names.contains("GET")
                && names.contains("load_user"),
            "{names:?}"
        );
    }
    // The threshold travels in tracestate: ot=th:c is a quarter.
    let upstream_server = spans
        .iter()
        .find(|s| s.resource["service.name"] == "upstream" && s.kind == 2)
        .unwrap();
    assert!(
        upstream_server.trace_state.contains("ot=th:c"),
        "{upstream_server:?}"
    );
}

/// Synthetic requests are kept and marked, rules keep what they name, allow-listed baggage
/// becomes attributes on every span of the trace, and ordinary traces stay dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_rules_and_breadcrumbs() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.http_endpoint();
    let app = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("TRACEWIRE_SAMPLING_RATIO", "0"),
        (
            "TRACEWIRE_SAMPLING_RULES",
            "name:GET /slow=always,route:/metrics=never",
        ),
        (
            "TRACEWIRE_BAGGAGE_ATTRIBUTES",
            "feature_flag.*,user.journey",
        ),
    ]);
    let baggage = "synthetic=probe,feature_flag.checkout=on,user.journey=signup,secret=x";
    let synthetic = get(&app.url("/users/5"), &[("baggage", baggage)]).await;
    let synthetic_id = trace_id_of(synthetic.headers["traceparent"].to_str().unwrap()).to_owned();
    assert!(
        synthetic.headers["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-01")
    );
    let failing = get(&app.url("/fail"), &[("baggage", "feature_flag.beta=true")]).await;
    let failing_id = trace_id_of(failing.headers["traceparent"].to_str().unwrap()).to_owned();
    let ruled = get(&app.url("/slow?ms=0"), &[]).await;
    let ruled_id = trace_id_of(ruled.headers["traceparent"].to_str().unwrap()).to_owned();
    let ordinary = get(&app.url("/users/6"), &[("baggage", "user.journey=browse")]).await;
    let ordinary_id = trace_id_of(ordinary.headers["traceparent"].to_str().unwrap()).to_owned();
    let metrics = get(&app.url("/metrics"), &[]).await.body;
    assert!(app.terminate().success());

    let spans = receiver.spans();
    let traces = by_trace(&spans);
    let kept: BTreeSet<&String> = traces.keys().collect();
    assert_eq!(
        kept,
        BTreeSet::from([&synthetic_id, &failing_id, &ruled_id])
    );
    assert!(!traces.contains_key(&ordinary_id));

    let synthetic_spans = &traces[&synthetic_id];
    let names: BTreeSet<&str> = synthetic_spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["GET /users/{id}", "load_user", "fetch_profile"])
    );
    for span in synthetic_spans {
        assert_eq!(
            span.attributes["user_agent.synthetic.type"], "probe",
            "{span:?}"
        );
        assert_eq!(span.attributes["feature_flag.checkout"], "on");
        assert_eq!(span.attributes["user.journey"], "signup");
        assert!(!span.attributes.contains_key("secret"));
    }
    for span in &traces[&failing_id] {
        assert_eq!(span.attributes["feature_flag.beta"], "true");
        assert!(!span.attributes.contains_key("user_agent.synthetic.type"));
    }
    let decision = |d: &str| {
        sample(
            &metrics,
            "tracewire_sampling_decisions_total",
            &[&format!("decision=\"{d}\"")],
        )
    };
    assert_eq!(decision("forced"), Some(1.0));
    assert_eq!(decision("rule"), Some(1.0));
    assert_eq!(decision("error"), Some(1.0));
    assert_eq!(decision("dropped"), Some(1.0), "{metrics}");
}

#[test]
fn invalid_sampling_settings_stop_the_service_with_the_variable_named() {
    for (var, value, expected) in [
        (
            "TRACEWIRE_SAMPLING_RATIO",
            "1.5",
            "TRACEWIRE_SAMPLING_RATIO=\"1.5\" is invalid",
        ),
        (
            "TRACEWIRE_SAMPLING_SLOW",
            "soon",
            "TRACEWIRE_SAMPLING_SLOW=\"soon\" is invalid",
        ),
        (
            "TRACEWIRE_SAMPLING_RULES",
            "colour:red=always",
            "TRACEWIRE_SAMPLING_RULES=",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}
