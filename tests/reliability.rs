//! Telemetry never hurts the service, and every drop is counted: spans sent to a collector
//! that is gone, that never answers or that answers, against the counters a user reads on
//! `/metrics`.
//!
//! The drop counters are process-wide; nextest runs every test in its own process.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Tracer, TracerProvider as _};
use tracewire::OtlpProtocol;
use tracewire::drops::{Reason, Signal, count, total};
use tracewire_test::OtlpReceiver;

/// A port that accepts connections and never reads or answers: every export waits for its
/// timeout.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Ends `n` spans as fast as possible from the global tracer provider.
fn end_spans(n: usize) {
    let tracer = opentelemetry::global::tracer_provider().tracer("reliability");
    for i in 0..n {
        tracer.in_span(format!("work-{}", i % 7), |_| {});
    }
}

fn span_drops() -> [u64; 3] {
    [
        count(Signal::Spans, Reason::QueueFull),
        count(Signal::Spans, Reason::ExportFailed),
        count(Signal::Spans, Reason::Shutdown),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_collector_takes_nothing_and_every_span_is_counted() {
    let hole = black_hole().await;
    let telemetry = tracewire::builder()
        .service_name("black-hole")
        .span_queue_size(256)
        .otlp_endpoint(format!("http://{hole}"))
        .otlp_protocol(OtlpProtocol::HttpProtobuf)
        .shutdown_timeout(Duration::from_secs(1))
        .log_writer(std::io::sink)
        .init()
        .expect("init");

    const N: usize = 20_000;
    end_spans(N);
    // The queue holds at most its capacity: the rest was dropped at once, and /metrics says so.
    assert!(
        telemetry.queued_spans() <= 256,
        "{}",
        telemetry.queued_spans()
    );
    let metrics = telemetry.metrics_service().render();
    let queue_full = common::dropped_total(&metrics, "spans", "queue_full");
    assert_eq!(queue_full, count(Signal::Spans, Reason::QueueFull));
    assert!(queue_full >= (N - 2 * 256) as u64, "{metrics}");

    // Shutdown gives up after its timeout and writes off what the collector never took.
    let started = Instant::now();
    let error = telemetry
        .shutdown()
        .expect_err("a black hole cannot be flushed");
    assert!(error.timed_out(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let [queue_full, export_failed, shutdown] = span_drops();
    assert_eq!(
        queue_full + export_failed + shutdown,
        N as u64,
        "queue_full={queue_full} export_failed={export_failed} shutdown={shutdown}"
    );
    assert_eq!(error.report().dropped_spans, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_over_grpc_fails_exports_and_they_are_counted() {
    let port = closed_port();
    let telemetry = tracewire::builder()
        .service_name("closed-port")
        .span_queue_size(512)
        .otlp_endpoint(format!("http://{port}"))
        .otlp_protocol(OtlpProtocol::Grpc)
        .metric_export_interval(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(2))
        .log_writer(std::io::sink)
        .init()
        .expect("init");

    const N: usize = 5_000;
    for _ in 0..10 {
        end_spans(N / 10);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Span and metric exports fail, and are counted as such.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (count(Signal::Metrics, Reason::ExportFailed) == 0
        || count(Signal::Spans, Reason::ExportFailed) == 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = telemetry.metrics_service().render();
    assert!(
        common::dropped_total(&metrics, "metrics", "export_failed") > 0,
        "{metrics}"
    );
    assert!(
        common::dropped_total(&metrics, "spans", "export_failed") > 0,
        "{metrics}"
    );

    let _ = telemetry.shutdown();
    let [queue_full, export_failed, shutdown] = span_drops();
    assert_eq!(
        queue_full + export_failed + shutdown,
        N as u64,
        "queue_full={queue_full} export_failed={export_failed} shutdown={shutdown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_collector_receives_exactly_what_was_not_counted_as_dropped() {
    let receiver = OtlpReceiver::start_with_delay(Duration::from_millis(20)).await;
    let telemetry = tracewire::builder()
        .service_name("slow-collector")
        .span_queue_size(128)
        .otlp_endpoint(receiver.http_endpoint())
        .otlp_protocol(OtlpProtocol::HttpProtobuf)
        .shutdown_timeout(Duration::from_secs(10))
        .log_writer(std::io::sink)
        .init()
        .expect("init");

    const N: usize = 10_000;
    end_spans(N);
    telemetry
        .shutdown()
        .expect("the collector answers: shutdown completes");
    let delivered = receiver.spans().len() as u64;
    let dropped = total(Signal::Spans);
    assert!(
        dropped > 0,
        "a slow collector should have made the queue overflow"
    );
    assert!(delivered > 0);
    assert_eq!(
        delivered + dropped,
        N as u64,
        "delivered={delivered} dropped={dropped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_with_a_black_hole_collector_ends_within_the_timeout() {
    let hole = black_hole().await;
    let telemetry = tracewire::builder()
        .otlp_endpoint(format!("http://{hole}"))
        .otlp_protocol(OtlpProtocol::Grpc)
        .shutdown_timeout(Duration::from_millis(500))
        .log_writer(std::io::sink)
        .init()
        .expect("init");
    end_spans(100);
    let started = Instant::now();
    drop(telemetry);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let [queue_full, export_failed, shutdown] = span_drops();
    assert_eq!(queue_full + export_failed + shutdown, 100);
}

#[test]
fn a_second_signal_ends_a_stop_that_waits_on_a_black_hole_at_once() {
    // The black hole lives on its own runtime thread for the length of the test.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hole = runtime.block_on(black_hole());
    let endpoint = format!("http://{hole}");
    let mut service = common::process::Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "quickstart listening",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    // A request, so the stop has spans to wait on.
    let _ = runtime.block_on(common::get(&service.url("/users/1"), &[]));
    let pid = service.child.id().to_string();
    let signal = |name: &str| {
        let ok = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    signal("-INT");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "still flushing towards the black hole"
    );
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second signal did not end the process"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
}
