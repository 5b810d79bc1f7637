//! A real Prometheus server (Debian package `prometheus`, installed by
//! `scripts/ensure-prometheus`) with exemplar storage on, scraping one target every second.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::get;

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Prometheus {
    /// Starts Prometheus on an ephemeral port, storage and configuration in a temporary
    /// directory, scraping `target` (`host:port`) at `/metrics` every second; waits until
    /// it is ready.
    pub async fn start(target: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tracewire-prometheus-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: service\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run prometheus ({e}): install it with scripts/ensure-prometheus")
            });
        let prometheus = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
                && get(&prometheus.api("/-/ready"), &[]).await.status == 200;
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready: {}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    fn api(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query_exemplars` for `query` over the last ten minutes: the `data` array.
    pub async fn query_exemplars(&self, query: &str) -> Vec<Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = self.api(&format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            encode(query),
            now - 600,
            now + 60
        ));
        let answer = get(&url, &[]).await;
        let body: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("query_exemplars answered {}: {e}", answer.body));
        assert_eq!(body["status"], "success", "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /api/v1/query` (an instant query): the `data.result` array.
    pub async fn query(&self, query: &str) -> Vec<Value> {
        let answer = get(
            &self.api(&format!("/api/v1/query?query={}", encode(query))),
            &[],
        )
        .await;
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Stop the server this test started (by its PID), then remove its storage.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
