//! The generated operations files, checked as an operator would: committed files match the
//! objectives in the code, `promtool` accepts the rules and passes their unit tests, and a
//! real Prometheus server scraping the quickstart pages on a failing route.
//!
//! Regenerate the committed files with
//! `TRACEWIRE_OPS_UPDATE=1 cargo nextest run -p tracewire-tests --test operations`
//! (`scripts/ensure-prometheus` installs `prometheus` and `promtool`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::get;
use common::process::Service;
use serde_json::Value;

/// The services with committed operations files, and their binaries.
const SERVICES: [(&str, &str); 5] = [
    ("quickstart", env!("CARGO_BIN_EXE_quickstart")),
    ("orders", env!("CARGO_BIN_EXE_pipeline-orders")),
    ("billing", env!("CARGO_BIN_EXE_pipeline-billing")),
    ("shipping", env!("CARGO_BIN_EXE_pipeline-shipping")),
    ("inventory", env!("CARGO_BIN_EXE_pipeline-inventory")),
];

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ops")
}

/// A tool from the `prometheus` Debian package; a missing one fails the test.
fn tool(name: &str) -> PathBuf {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed: run scripts/ensure-prometheus (Debian package `prometheus`)"
    );
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn committed_operations_files_match_the_objectives_in_the_code() {
    for (service, exe) in SERVICES {
        let (ok, output) = run(Command::new(exe).arg("--ops-check").arg(ops_dir()));
        assert!(ok, "{service}: {output}");
        for suffix in [
            "rules.yml",
            "rules.test.yml",
            "dashboard.json",
            "runbook.md",
        ] {
            assert!(
                ops_dir().join(format!("{service}.{suffix}")).is_file(),
                "{service}.{suffix} is not committed"
            );
        }
    }
}

#[test]
fn a_drifted_file_fails_with_a_readable_diff() {
    let dir = std::env::temp_dir().join(format!("tracewire-ops-drift-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, output) = run(Command::new(SERVICES[0].1).arg("--ops-out").arg(&dir));
    assert!(ok, "{output}");
    let rules = dir.join("quickstart.rules.yml");
    let text = std::fs::read_to_string(&rules).unwrap();
    // An operator hand-edits a threshold of the committed file.
    std::fs::write(&rules, text.replacen("> 0.0144", "> 0.5", 1)).unwrap();
    std::fs::remove_file(dir.join("quickstart.runbook.md")).unwrap();
    let (ok, output) = run(Command::new(SERVICES[0].1)
        .env_remove("TRACEWIRE_OPS_UPDATE")
        .arg("--ops-check")
        .arg(&dir));
    assert!(!ok);
    assert!(
        output.contains(
            "--- quickstart.rules.yml (committed)\n+++ quickstart.rules.yml (generated)\n@@ "
        ),
        "{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with('-') && l.ends_with("> 0.5")),
        "{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with('+') && l.ends_with("> 0.0144")),
        "{output}"
    );
    assert!(
        output.contains("--- quickstart.runbook.md (committed)"),
        "{output}"
    );
    assert!(output.contains("not committed"), "{output}");
    assert!(output.contains("TRACEWIRE_OPS_UPDATE=1"), "{output}");
    // With the update variable the files are rewritten and then match.
    let (ok, output) = run(Command::new(SERVICES[0].1)
        .env("TRACEWIRE_OPS_UPDATE", "1")
        .arg("--ops-check")
        .arg(&dir));
    assert!(ok, "{output}");
    let (ok, output) = run(Command::new(SERVICES[0].1).arg("--ops-check").arg(&dir));
    assert!(ok, "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn promtool_accepts_every_generated_rule_file() {
    let promtool = tool("promtool");
    for (service, _) in SERVICES {
        let file = ops_dir().join(format!("{service}.rules.yml"));
        let (ok, output) = run(Command::new(&promtool).arg("check").arg("rules").arg(&file));
        assert!(ok, "promtool check rules {}:\n{output}", file.display());
        assert!(output.contains("SUCCESS"), "{output}");
    }
}

#[test]
fn promtool_runs_the_generated_unit_tests() {
    // Per objective: every event bad pages and opens a ticket; half the error budget (0.05 %
    // at 99.9 %) stays silent; an idle subject and a trickle below the traffic guard stay silent.
    let promtool = tool("promtool");
    let files: Vec<PathBuf> = SERVICES
        .iter()
        .map(|(service, _)| ops_dir().join(format!("{service}.rules.test.yml")))
        .collect();
    let quickstart = std::fs::read_to_string(&files[0]).unwrap();
    for case in [
        "fail availability: every request bad: pages and opens a ticket",
        "fail availability: 0.05% bad (half the error budget): silent",
        "fail availability: idle: silent",
        "users latency: every request bad: pages and opens a ticket",
    ] {
        assert!(quickstart.contains(case), "no case {case:?}");
    }
    let (ok, output) = run(Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .args(&files));
    assert!(ok, "promtool test rules:\n{output}");
    assert!(!output.contains("FAILED"), "{output}");
}

/// A Prometheus server on an ephemeral port, in a temporary directory, killed by PID on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str, rules: &Path) -> Self {
        let exe = tool("prometheus");
        let dir = std::env::temp_dir().join(format!("tracewire-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: quickstart\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(exe)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    async fn api(&self, path: &str) -> Value {
        let answer = get(&format!("{}{path}", self.url), &[]).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["status"], "success", "{body}");
        body["data"].clone()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if std::net::TcpStream::connect(self.url.trim_start_matches("http://")).is_ok()
                && get(&format!("{}/-/ready", self.url), &[]).await.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alert<'a>(alerts: &'a Value, name: &str, severity: &str, route: &str) -> Option<&'a Value> {
    alerts["alerts"].as_array()?.iter().find(|a| {
        a["labels"]["alertname"] == name
            && a["labels"]["severity"] == severity
            && a["labels"]["http_route"] == route
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_pages_within_three_minutes_of_continuous_failures() {
    let app = Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        &[],
    );
    let rules = ops_dir()
        .join("quickstart.rules.yml")
        .canonicalize()
        .unwrap();
    let mut prometheus = Prometheus::start(&app.addr, &rules);
    prometheus.wait_ready().await;

    // Continuous GET /fail, and healthy traffic on the other routes.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let driver = {
        let (stop, failures) = (stop.clone(), failures.clone());
        let (fail, user, missing) = (app.url("/fail"), app.url("/users/7"), app.url("/users/0"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(get(&fail, &[]).await.status, 500);
                failures.fetch_add(1, Ordering::Relaxed);
                assert_eq!(get(&user, &[]).await.status, 200);
                assert_eq!(get(&missing, &[]).await.status, 404);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let page = loop {
        let alerts = prometheus.api("/api/v1/alerts").await;
        if let Some(page) = alert(
            &alerts,
            "QuickstartFailAvailabilityBudgetBurn",
            "page",
            "/fail",
        ) {
            break page.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no page alert after 3 minutes of GET /fail ({} failures); alerts: {alerts}\nprometheus log:\n{}",
            failures.load(Ordering::Relaxed),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let waited = started.elapsed();
    assert!(
        page["state"] == "pending" || page["state"] == "firing",
        "{page}"
    );
    assert_eq!(page["labels"]["service"], "quickstart");
    assert_eq!(page["labels"]["objective"], "fail");
    assert_eq!(page["labels"]["sli"], "availability");
    assert_eq!(
        page["annotations"]["runbook_url"],
        "quickstart.runbook.md#quickstartfailavailabilitybudgetburn"
    );
    assert!(
        page["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("HTTP route `/fail`"),
        "{page}"
    );
    // The healthy route (its 404s are not failures) does not page.
    let alerts = prometheus.api("/api/v1/alerts").await;
    assert!(
        alert(
            &alerts,
            "QuickstartUsersAvailabilityBudgetBurn",
            "page",
            "/users/{id}"
        )
        .is_none(),
        "{alerts}"
    );
    eprintln!("page alert {} after {waited:?}", page["state"]);

    // Every metric the dashboard asks for exists: in the scrape or as a recording rule.
    let known: BTreeSet<String> = prometheus
        .api("/api/v1/label/__name__/values")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(ops_dir().join("quickstart.dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| tracewire::ops::metric_names(e))
        .collect();
    for name in [
        "http_server_request_duration_seconds_bucket",
        "http_server_request_duration_seconds_count",
        "function_calls_total",
        "tracewire:slo_bad_ratio:rate1h",
        "tracewire:slo_bad_ratio:rate30d",
    ] {
        assert!(
            used.contains(name),
            "the dashboard does not use {name}: {used:?}"
        );
    }
    let missing: Vec<&String> = used.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that Prometheus does not have: {missing:?}\nknown: {known:?}"
    );

    stop.store(true, Ordering::Relaxed);
    driver.await.unwrap();
    drop(prometheus);
    assert!(app.terminate().success());
}
