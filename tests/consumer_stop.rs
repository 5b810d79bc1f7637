//! Consumers that always stop: the `kafka` and `amqp` examples, consuming from a broker of
//! their own, exit cleanly within 6 s of SIGINT whatever that broker does at that moment —
//! killed, killed while the consumer leaves its group, paused (a partition: connections stay
//! open, nothing answers), closing every connection, stopping — several times in a row.
//!
//! Each test runs a private broker on ports of its own (tansu from PATH, which
//! `scripts/ensure-tansu` installs; RabbitMQ from `/usr/lib/rabbitmq/bin` with its own node
//! name, ports and directories) and kills only that broker. A missing broker fails the test.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracewire::amqp::lapin::options::BasicPublishOptions;
use tracewire::amqp::lapin::types::ShortString;
use tracewire::amqp::lapin::{BasicProperties, Connection, ConnectionProperties};

/// What the user is promised: SIGINT to exit, with the broker doing its worst.
const STOP_BOUND: Duration = Duration::from_secs(6);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {name} {pid}");
}

/// Pauses process `pid` (SIGSTOP) and waits until the kernel reports it stopped, so the
/// fault is in place before the consumer is signalled.
fn pause(pid: u32) {
    signal(pid, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the parenthesised command name.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        if state == Some("T") {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} not stopped: {stat}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A clean stop: status 0, or 1 when the example saw its broker fail before the signal and
/// said so (`failed`); never killed by a signal or cut short by a second one (130).
fn assert_stopped(status: ExitStatus, logs: &[Value], failed: &str, case: &str) {
    let reported = logs.iter().any(|l| l["message"] == failed);
    assert!(
        status.code() == Some(0) || (status.code() == Some(1) && reported),
        "{case}: {status}: {logs:#?}"
    );
}

/// An example run as a user runs it, its JSON stdout collected line by line; killed on drop.
struct Example {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Example {
    fn start(exe: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, lines) = common::process::spawn_collecting_json(cmd);
        Self { child, lines }
    }

    fn logs(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `count` lines with `message` were logged; fails with the logs when the
    /// process exits first or `within` passes.
    fn wait_for(&mut self, message: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let logs = self.logs();
            if logs.iter().filter(|l| l["message"] == message).count() >= count {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited ({status}) before {count} × {message:?}: {logs:#?}");
            }
            assert!(
                Instant::now() < deadline,
                "no {count} × {message:?} within {within:?}: {logs:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit the signal sent at `sent` asked for; returns how long it took and
    /// the status, or fails once [`STOP_BOUND`] has passed.
    fn exit_after(&mut self, sent: Instant, case: &str) -> (Duration, ExitStatus) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (sent.elapsed(), status);
            }
            assert!(
                sent.elapsed() < STOP_BOUND,
                "{case}: still running {STOP_BOUND:?} after SIGINT: {:#?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the Kafka broker does when the consumer is told to stop.
#[derive(Debug, Clone, Copy)]
enum KafkaFault {
    /// Killed, then SIGINT at once.
    Killed,
    /// SIGINT, then killed as soon as the consumer starts leaving its group.
    KilledMidLeave,
    /// Paused (SIGSTOP): connections open, nothing answers; then SIGINT.
    Paused,
}

#[test]
fn the_kafka_consumer_stops_in_time_whatever_the_broker_does() {
    let faults = [
        KafkaFault::Killed,
        KafkaFault::KilledMidLeave,
        KafkaFault::Paused,
    ];
    let run = std::process::id();
    for round in 0..2 {
        for fault in faults {
            let case = format!("round {round}, {fault:?}");
            let broker = tracewire_test::PrivateTansu::start();
            let brokers = broker.bootstrap();
            let topic = format!("tracewire.stop.{run}.{round}.{fault:?}");
            // The example's own run: creates the topic, sends 3 records, processes them.
            let mut first = Example::start(
                env!("CARGO_BIN_EXE_kafka"),
                &[],
                &[
                    ("KAFKA_BROKERS", &brokers),
                    ("KAFKA_TOPIC", &topic),
                    ("KAFKA_GROUP", &format!("{topic}.first")),
                ],
            );
            first.wait_for(
                "all records of this run processed",
                1,
                Duration::from_secs(90),
            );
            // The consumer service under test, in another group: processes the same records.
            let mut consumer = Example::start(
                env!("CARGO_BIN_EXE_kafka"),
                &["--consume-only"],
                &[
                    ("KAFKA_BROKERS", &brokers),
                    ("KAFKA_TOPIC", &topic),
                    ("KAFKA_GROUP", &format!("{topic}.second")),
                ],
            );
            consumer.wait_for("processed record", 3, Duration::from_secs(90));
            let pid = consumer.child.id();
            let tansu = broker.pid();
            let sent = match fault {
                KafkaFault::Killed => {
                    signal(tansu, "-KILL");
                    signal(pid, "-INT");
                    Instant::now()
                }
                KafkaFault::KilledMidLeave => {
                    signal(pid, "-INT");
                    let sent = Instant::now();
                    consumer.wait_for("signal received: leaving the consumer group", 1, STOP_BOUND);
                    signal(tansu, "-KILL");
                    sent
                }
                KafkaFault::Paused => {
                    pause(tansu);
                    signal(pid, "-INT");
                    Instant::now()
                }
            };
            let (took, status) = consumer.exit_after(sent, &case);
            assert_stopped(status, &consumer.logs(), "kafka example failed", &case);
            eprintln!("kafka, {case}: exited ({status}) {took:?} after SIGINT");
        }
    }
}

/// A RabbitMQ node of this test's own: own node name, AMQP and distribution ports, database,
/// logs and (no) plugins under a temporary directory. Killed on drop.
struct Rabbit {
    dir: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    launcher: Option<Child>,
}

impl Rabbit {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("tracewire-stop-rabbit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        Self {
            node: format!("tracewire-stop-{}@localhost", std::process::id()),
            port: free_port(),
            dist_port: free_port(),
            dir,
            launcher: None,
        }
    }

    fn env(&self, cmd: &mut Command) {
        let path = |name: &str| self.dir.join(name).display().to_string();
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"));
    }

    /// Starts the node (again) and waits until it accepts AMQP connections.
    fn start(&mut self) {
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        self.env(&mut cmd);
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start rabbitmq-server (Debian package): {e}"));
        self.launcher = Some(child);
        wait_for_port(
            self.port,
            Duration::from_secs(90),
            "the private RabbitMQ node",
        );
    }

    /// The node's own process (the Erlang VM), from its pid file.
    fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("pid"))
            .expect("the node writes its pid file")
            .trim()
            .parse()
            .unwrap()
    }

    /// Runs `rabbitmqctl -n <node> <args>` in the background.
    fn ctl(&self, args: &[&str]) -> Child {
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        self.env(&mut cmd);
        cmd.arg("-n")
            .arg(&self.node)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run rabbitmqctl")
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        if let Some(mut launcher) = self.launcher.take() {
            let _ = launcher.kill();
            let _ = launcher.wait();
        }
        // The port must be free before the node starts again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the RabbitMQ node does when the consumer is told to stop.
#[derive(Debug, Clone, Copy)]
enum AmqpFault {
    /// `rabbitmqctl close_all_connections`, SIGINT at the moment it runs.
    ConnectionsClosed,
    /// Paused (SIGSTOP): the connection stays open, nothing answers; then SIGINT.
    Paused,
    /// `rabbitmqctl stop_app`, SIGINT at the moment it runs.
    Stopping,
    /// SIGINT, then killed at once.
    Killed,
}

async fn publish(url: &str, queue: &str, n: usize) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for i in 0..n {
        channel
            .basic_publish(
                ShortString::default(),
                ShortString::try_new(queue).unwrap(),
                BasicPublishOptions::default(),
                format!("{{\"order\":{i}}}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    connection
        .close(200, ShortString::from("published"))
        .await
        .unwrap();
}

#[test]
fn the_amqp_consumer_stops_in_time_whatever_the_broker_does() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rabbit = Rabbit::new();
    rabbit.start();
    let url = rabbit.url();
    let faults = [
        AmqpFault::ConnectionsClosed,
        AmqpFault::Paused,
        AmqpFault::Stopping,
        AmqpFault::Killed,
    ];
    for round in 0..2 {
        for fault in faults {
            let case = format!("round {round}, {fault:?}");
            let queue = format!("tracewire.stop.{}.{round}.{fault:?}", std::process::id());
            let mut consumer = Example::start(
                env!("CARGO_BIN_EXE_amqp"),
                &["--consume-only"],
                &[("AMQP_ADDR", &url), ("AMQP_QUEUE", &queue)],
            );
            consumer.wait_for("consuming", 1, Duration::from_secs(30));
            runtime.block_on(publish(&url, &queue, 3));
            consumer.wait_for("processed message", 3, Duration::from_secs(30));
            let pid = consumer.child.id();
            let node = rabbit.pid();
            let mut ctl = None;
            match fault {
                AmqpFault::ConnectionsClosed => {
                    ctl = Some(rabbit.ctl(&["close_all_connections", "stopping"]));
                }
                AmqpFault::Paused => pause(node),
                AmqpFault::Stopping => ctl = Some(rabbit.ctl(&["stop_app"])),
                AmqpFault::Killed => {}
            }
            if ctl.is_some() {
                // rabbitmqctl needs a moment to start its own Erlang VM before it acts: the
                // second round signals about when it does.
                std::thread::sleep(Duration::from_millis(1500) * round);
            }
            signal(pid, "-INT");
            let sent = Instant::now();
            if let AmqpFault::Killed = fault {
                rabbit.kill();
            }
            let (took, status) = consumer.exit_after(sent, &case);
            assert_stopped(status, &consumer.logs(), "amqp example failed", &case);
            eprintln!("amqp, {case}: exited ({status}) {took:?} after SIGINT (node {node})");
            // Back to a working node for the next case.
            if let Some(mut ctl) = ctl {
                assert!(ctl.wait().unwrap().success(), "{case}: rabbitmqctl failed");
            }
            match fault {
                AmqpFault::ConnectionsClosed => {}
                AmqpFault::Paused => signal(node, "-CONT"),
                AmqpFault::Stopping => {
                    assert!(rabbit.ctl(&["start_app"]).wait().unwrap().success());
                    wait_for_port(
                        rabbit.port,
                        Duration::from_secs(60),
                        "RabbitMQ after start_app",
                    );
                }
                AmqpFault::Killed => rabbit.start(),
            }
        }
    }
}
