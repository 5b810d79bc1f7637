//! Service binaries run as real processes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A service binary run as a user runs it, its JSON stdout collected line by line.
pub struct Service {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    pub addr: String,
}

impl Service {
    /// Starts `exe` on an ephemeral port (or `LISTEN_ADDR` from `env`) and waits until it
    /// logs `ready` with its `addr` (or, with a fixed address, until the port answers).
    pub fn start(exe: &str, ready: &str, env: &[(&str, &str)]) -> Self {
        let (child, lines) = Self::spawn(exe, env);
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some((_, addr)) = env.iter().find(|(k, _)| *k == "LISTEN_ADDR") {
            // A fixed address (the listening line may be filtered out): wait for the port.
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "{exe} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            return Self {
                child,
                lines,
                addr: addr.to_string(),
            };
        }
        let addr = loop {
            if let Some(addr) = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l["message"] == ready)
                .and_then(|l| l["addr"].as_str().map(str::to_owned))
            {
                break addr;
            }
            assert!(Instant::now() < deadline, "{exe} did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, lines, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the service ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

impl Service {
    /// Log lines carrying `trace_id`.
    pub fn logs_of_trace(&self, trace_id: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["trace_id"] == trace_id)
            .collect()
    }
}

impl Service {
    /// Starts `exe`, a service without a listening address of its own (a queue consumer),
    /// and waits until it logs `ready`; fails with its log lines if it exits first.
    pub fn start_worker(exe: &str, ready: &str, env: &[(&str, &str)]) -> Self {
        let (mut child, lines) = Self::spawn(exe, env);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines.lock().unwrap().iter().any(|l| l["message"] == ready) {
            if let Some(status) = child.try_wait().unwrap() {
                let logs = lines.lock().unwrap().clone();
                panic!("{exe} exited ({status}) before logging {ready:?}: {logs:?}");
            }
            assert!(Instant::now() < deadline, "{exe} did not log {ready:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            lines,
            addr: String::new(),
        }
    }

    /// Runs `exe` on an ephemeral `LISTEN_ADDR`, without the test's own OTLP variables, with
    /// `env` on top, collecting its JSON stdout line by line.
    fn spawn(exe: &str, env: &[(&str, &str)]) -> (Child, Arc<Mutex<Vec<Value>>>) {
        let mut cmd = Command::new(exe);
        cmd.env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES");
        for (k, v) in env {
            cmd.env(k, v);
        }
        spawn_collecting_json(cmd)
    }
}

/// Spawns `cmd` with its standard error inherited and its standard output read on a thread of
/// its own, every line parsed as JSON (a line that is not JSON fails the test) into the list
/// returned beside the child.
pub fn spawn_collecting_json(mut cmd: Command) -> (Child, Arc<Mutex<Vec<Value>>>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            sink.lock().unwrap().push(value);
        }
    });
    (child, lines)
}
