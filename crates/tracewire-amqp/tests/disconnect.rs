//! The broker drops the connection mid-stream: the consumer reports it, and the deliveries
//! already received keep their context.

mod support;

use std::convert::Infallible;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Status, TraceContextExt};
use tracewire_test::Capture;

use futures_util::StreamExt;
use support::*;

/// `rabbitmqctl` (`RABBITMQCTL` overrides; Debian installs it in /usr/sbin, which a non-login
/// PATH may lack).
fn rabbitmqctl() -> Command {
    let program = std::env::var("RABBITMQCTL").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/sbin/rabbitmqctl").exists() {
            "/usr/sbin/rabbitmqctl".to_owned()
        } else {
            "rabbitmqctl".to_owned()
        }
    });
    Command::new(program)
}

/// The Erlang pid of the broker connection named `name` (as `rabbitmqctl` lists it).
fn connection_pid(name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = rabbitmqctl()
            .args([
                "list_connections",
                "pid",
                "client_properties",
                "--quiet",
                "--no-table-headers",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!("rabbitmqctl is needed to drop a connection from the broker side: {e}")
            });
        assert!(
            out.status.success(),
            "rabbitmqctl list_connections failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One line per connection: `<rabbit@host.N.M.K>\t[client properties]`.
        let text = String::from_utf8_lossy(&out.stdout);
        let found = text
            .lines()
            .find(|line| line.contains(name))
            .and_then(|line| line.split_whitespace().next())
            .map(str::to_owned);
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "connection {name} not listed by rabbitmqctl: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_surfaces_as_an_error_and_keeps_received_contexts() {
    let capture = Capture::install();
    let name = unique("dropped");
    let conn = connect_named(&name).await;
    let channel = traced_channel(&conn).await;
    let queue = unique("drop");
    declare_queue(&channel, &queue, FieldTable::default()).await;

    let mut producers = Vec::new();
    for n in 0..2 {
        let root = root_span("enqueue");
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                format!("job {n}").as_bytes(),
                BasicProperties::default(),
            )
            .with_context(root)
            .await
            .expect("publish");
        producers.push(confirm.context().span().span_context().clone());
        confirm.await.expect("confirm");
    }

    let mut consumer = consume(&channel, &queue).await;
    let held = vec![next(&mut consumer).await, next(&mut consumer).await];

    // The broker closes the connection.
    let pid = connection_pid(&name);
    let out = rabbitmqctl()
        .args(["close_connection", &pid, "test: broker-side drop"])
        .output()
        .expect("rabbitmqctl close_connection");
    assert!(
        out.status.success(),
        "close_connection failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The stream reports the drop as an error, then ends.
    let item = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the consumer must notice the drop within 10 s");
    let err = match item {
        Some(Err(err)) => err,
        Some(Ok(d)) => panic!("unexpected delivery after the drop: {d:?}"),
        None => panic!("the stream ended without reporting the connection drop"),
    };
    assert!(
        err.to_string().contains("test: broker-side drop") || err.is_amqp_hard_error(),
        "unexpected error: {err:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("stream end");
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");

    // The deliveries received before the drop still carry their creation context, and can
    // still be processed in their trace; the ack cannot reach the broker and says so.
    for (delivery, producer) in held.into_iter().zip(&producers) {
        let creation = delivery.context().span().span_context().clone();
        assert_eq!(creation.trace_id(), producer.trace_id());
        assert_eq!(creation.span_id(), producer.span_id());
        let result = consumer
            .process(&delivery, async {
                tracing::info!("processing after the drop");
                Ok::<(), Infallible>(())
            })
            .await;
        let err = result.expect_err("ack on a dead connection must fail");
        assert!(
            matches!(err.kind(), lapin::ErrorKind::InvalidChannelState(..)),
            "{err:?}"
        );
    }

    let spans = capture.spans_named(&format!("process {queue}"));
    assert_eq!(spans.len(), 2);
    for (span, producer) in spans.iter().zip(&producers) {
        assert_eq!(span.span_context.trace_id(), producer.trace_id());
        assert_eq!(span.parent_span_id, producer.span_id());
        assert_eq!(attr(span, "messaging.message.outcome"), s("ack"));
        assert_eq!(attr(span, "error.type"), s("invalid_channel_state"));
        assert!(matches!(span.status, Status::Error { .. }));
    }
    let logs = capture.logs();
    let lines: Vec<_> = logs
        .iter()
        .filter(|l| l["message"] == "processing after the drop")
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, producer) in lines.iter().zip(&producers) {
        assert_eq!(line["trace_id"], producer.trace_id().to_string().as_str());
    }
}
