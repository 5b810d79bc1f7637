//! Generation of the operations files from objectives: checks, determinism, and queries that
//! only use names a scrape of `/metrics` or the recording rules provide.

use std::collections::BTreeSet;
use std::time::Duration;

use tracewire::ops::{Generator, Objective, Percent, Subject, metric_names};

fn users() -> Objective {
    Objective::new("users", Subject::HttpRoute("/users/{id}"))
        .with_availability(Percent::from_ppm(999_000))
        .with_latency(Percent::from_ppm(990_000), Duration::from_millis(250))
}

fn all() -> Vec<Objective> {
    vec![
        users(),
        Objective::new("api", Subject::AllHttpRoutes).with_availability(Percent::from_ppm(995_000)),
        Objective::new(
            "charge",
            Subject::Function {
                name: "charge",
                module: Some("billing"),
            },
        )
        .with_availability(Percent::from_ppm(990_000)),
        Objective::new("orders", Subject::AmqpQueue("orders"))
            .with_latency(Percent::from_ppm(950_000), Duration::from_secs(1)),
        Objective::new("payments", Subject::KafkaTopic("payments"))
            .with_availability(Percent::from_ppm(999_900))
            .with_window(Duration::from_secs(28 * 86_400)),
    ]
}

#[test]
fn a_threshold_between_bucket_bounds_is_rejected_with_the_objective_name() {
    let err = Generator::new("shop")
        .objectives([Objective::new("slow", Subject::HttpRoute("/slow"))
            .with_latency(Percent::from_ppm(990_000), Duration::from_millis(300))
            .declared_at("src/main.rs", 12)])
        .files()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot generate the operations files:\n  - objective `slow` (src/main.rs:12): the latency \
         threshold 300 ms is not a bucket bound of the duration histograms (one of 5 ms, 10 ms, \
         25 ms, 50 ms, 75 ms, 100 ms, 250 ms, 500 ms, 750 ms, 1 s, 2.5 s, 5 s, 7.5 s, 10 s); a \
         threshold between bounds cannot be measured"
    );
}

#[test]
fn every_problem_is_listed() {
    let err = Generator::new("shop")
        .objectives([
            Objective::new("dup", Subject::HttpRoute("/a"))
                .with_availability(Percent::from_ppm(999_000)),
            Objective::new("dup", Subject::HttpRoute("/b"))
                .with_availability(Percent::from_ppm(999_000)),
            Objective::new("full", Subject::HttpRoute("/c"))
                .with_availability(Percent::from_ppm(1_000_000)),
            Objective::new("none", Subject::HttpRoute("/d")),
            Objective::new("route", Subject::HttpRoute("e"))
                .with_availability(Percent::from_ppm(999_000)),
            Objective::new("short", Subject::KafkaTopic("t"))
                .with_availability(Percent::from_ppm(999_000))
                .with_window(Duration::from_secs(3600)),
        ])
        .files()
        .unwrap_err();
    let text = err.to_string();
    for expected in [
        "objective `dup` is declared more than once",
        "objective `full`: the availability target 100% must be above 0% and below 100%",
        "objective `none`: no target",
        "objective `route`: the route `e` must start with `/`",
        "objective `short`: the window must be whole and at least a day (it is 1 hour)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn output_is_deterministic_whatever_the_declaration_order() {
    let a = Generator::new("shop").objectives(all()).files().unwrap();
    let mut reversed = all();
    reversed.reverse();
    let b = Generator::new("shop").objectives(reversed).files().unwrap();
    assert_eq!(a, b);
    let names: Vec<&str> = a.iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "shop.dashboard.json",
            "shop.rules.test.yml",
            "shop.rules.yml",
            "shop.runbook.md"
        ]
    );
}

#[test]
fn rules_select_the_scraped_series_of_each_subject() {
    let files = Generator::new("shop").objectives(all()).files().unwrap();
    let rules = files.get("shop.rules.yml").unwrap();
    for expected in [
        // HTTP: failures are requests with error.type, latency from the `le` bucket.
        "rate(http_server_request_duration_seconds_count{job=\"shop\",http_route=\"/users/{id}\",error_type!=\"\"}[5m])",
        "rate(http_server_request_duration_seconds_bucket{job=\"shop\",http_route=\"/users/{id}\",le=\"0.25\"}[1h])",
        "sum by (http_route) (rate(http_server_request_duration_seconds_count{job=\"shop\",http_route!=\"\",error_type!=\"\"}[6h]))",
        // Functions: calls by result.
        "rate(function_calls_total{job=\"shop\",function=\"charge\",module=\"billing\",result=\"error\"}[3d])",
        // Queues and topics: process duration, by system and destination.
        "rate(messaging_process_duration_seconds_bucket{job=\"shop\",messaging_system=\"rabbitmq\",messaging_destination_name=\"orders\",le=\"1\"}[30m])",
        "rate(messaging_process_duration_seconds_count{job=\"shop\",messaging_system=\"kafka\",messaging_destination_name=\"payments\",error_type!=\"\"}[28d])",
        // Burn rates: 14.4, 6 and 1 times the budget for 30 days; scaled for 28 days.
        "tracewire:slo_bad_ratio:rate1h{service=\"shop\",objective=\"users\",sli=\"availability\"} > 0.0144",
        "tracewire:slo_bad_ratio:rate30m{service=\"shop\",objective=\"users\",sli=\"latency\"} > 0.06",
        "tracewire:slo_bad_ratio:rate3d{service=\"shop\",objective=\"users\",sli=\"availability\"} > 0.001",
        "tracewire:slo_bad_ratio:rate5m{service=\"shop\",objective=\"payments\",sli=\"availability\"} > 0.001344",
        // The traffic guard.
        "tracewire:slo_events:rate1h{service=\"shop\",objective=\"users\"} * 3600 >= 20",
        "summary: \"shop: HTTP route `{{ $labels.http_route }}` of objective `api` is using up its error budget fast\"",
        "runbook_url: \"shop.runbook.md#shopusersavailabilitybudgetburn\"",
    ] {
        assert!(
            rules.contains(expected),
            "missing {expected:?} in:\n{rules}"
        );
    }
    assert_eq!(rules.matches("severity: page").count(), 6);
    assert_eq!(rules.matches("severity: ticket").count(), 6);
}

#[test]
fn matchers_runbook_base_and_traffic_guard_are_configurable() {
    let files = Generator::new("shop")
        .objectives([users()])
        .matchers(["namespace=\"prod\"", "app=\"shop\""])
        .runbook_base_url("https://runbooks.example/")
        .min_events(100)
        .trace_url_template("https://traces.example/trace/${__value.raw}")
        .files()
        .unwrap();
    let rules = files.get("shop.rules.yml").unwrap();
    assert!(rules.contains("{namespace=\"prod\",app=\"shop\",http_route=\"/users/{id}\"}"));
    assert!(!rules.contains("job="));
    assert!(rules.contains(
        "runbook_url: \"https://runbooks.example/shop.runbook.md#shopuserslatencybudgetburn\""
    ));
    assert!(rules.contains("* 3600 >= 100"));
    let dashboard: serde_json::Value =
        serde_json::from_str(files.get("shop.dashboard.json").unwrap()).unwrap();
    let latency = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Request duration p50 / p90 / p99 by route")
        .unwrap();
    assert!(
        latency["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["exemplar"] == true)
    );
    assert_eq!(
        latency["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["url"],
        "https://traces.example/trace/${__value.raw}"
    );
}

/// Names a scrape of `/metrics` shows for the instruments the dashboard reads.
const SCRAPED: [&str; 12] = [
    "http_server_request_duration_seconds_bucket",
    "http_server_request_duration_seconds_count",
    "http_server_active_requests",
    "function_calls_total",
    "function_calls_duration_seconds_bucket",
    "function_calls_duration_seconds_count",
    "function_calls_concurrent",
    "messaging_process_duration_seconds_bucket",
    "messaging_process_duration_seconds_count",
    "messaging_client_consumed_messages_total",
    "messaging_client_sent_messages_total",
    "target_info",
];

#[test]
fn the_dashboard_only_queries_scraped_or_recorded_series() {
    let files = Generator::new("shop").objectives(all()).files().unwrap();
    let rules = files.get("shop.rules.yml").unwrap();
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect();
    assert!(recorded.contains("tracewire:slo_bad_ratio:rate28d"));
    let dashboard: serde_json::Value =
        serde_json::from_str(files.get("shop.dashboard.json").unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let mut used = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    for name in &used {
        assert!(
            SCRAPED.contains(&name.as_str()) || recorded.contains(name),
            "the dashboard queries {name}, which neither the scrape nor the rules provide"
        );
    }
    // Budget left and burn rate of every objective.
    for title in [
        "users availability: error budget left (30 days)",
        "users latency: burn rate",
        "payments availability: error budget left (28 days)",
        "orders latency: burn rate",
    ] {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel {title:?}"
        );
    }
}

#[test]
fn the_runbook_has_a_section_per_alert() {
    let files = Generator::new("shop").objectives(all()).files().unwrap();
    let runbook = files.get("shop.runbook.md").unwrap();
    let rules = files.get("shop.rules.yml").unwrap();
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 6);
    for alert in alerts {
        assert!(
            runbook.contains(&format!("\n## {alert}\n")),
            "no section for {alert}"
        );
        assert!(runbook.contains(&format!("](#{})", alert.to_ascii_lowercase())));
    }
    for expected in [
        "### What fired",
        "### What it means for users",
        "### Open",
        "### Find the traces",
        "### First steps",
        "TraceQL `{ span.messaging.destination.name = \"orders\" && kind = consumer && duration > 1s }`",
    ] {
        assert!(runbook.contains(expected), "missing {expected:?}");
    }
}
