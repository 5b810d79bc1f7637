//! [`PrivateTansu`]: a tansu broker (an Apache Kafka compatible broker) of a test's own, for
//! tests that kill, pause or stop the broker and must not disturb the shared one on
//! 127.0.0.1:9092.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu process on a free port with memory storage; killed on [`stop`](Self::stop) or
/// drop. Fails the test, naming `scripts/ensure-tansu`, when tansu is not installed or does not
/// listen within 30 s.
#[derive(Debug)]
pub struct PrivateTansu {
    child: Child,
    port: u16,
}

impl PrivateTansu {
    /// Starts the broker and waits until it listens.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start tansu ({e}); run `scripts/ensure-tansu` to install it")
            });
        let broker = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private tansu did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:{port}`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `tansu` from cargo's bin directory when it is there (where `scripts/ensure-tansu` installs
/// it), else from `PATH`.
fn binary() -> String {
    let cargo_bin = std::env::var("CARGO_HOME")
        .map(|home| format!("{home}/bin/tansu"))
        .or_else(|_| std::env::var("HOME").map(|home| format!("{home}/.cargo/bin/tansu")));
    match cargo_bin {
        Ok(path) if std::path::Path::new(&path).exists() => path,
        _ => "tansu".to_owned(),
    }
}
