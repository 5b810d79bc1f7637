//! The messaging scenarios every broker integration runs — publish, process ok, error, panic,
//! cancel, retry, dead letter, batch — and the telemetry shape they must leave, identical on
//! every broker.
//!
//! A broker integration implements [`Broker`] (publish one message, receive and process the
//! next one or the next few with a [`Handler`]); [`run`] plays a [`Scenario`] on it and reduces
//! the spans it recorded to [`SpanShape`]s: names with the destination replaced by its role,
//! kinds, statuses, events, parents, and attribute keys — apart from the broker's own
//! (`messaging.rabbitmq.*`, `messaging.kafka.*`) and Kafka's partition — with the values that
//! must agree (`messaging.operation.type`, outcomes, `error.type`, attempts, batch sizes).
//! [`metric_shape`] does the same for the messaging metrics. A test runs every scenario on
//! each broker and compares the shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use opentelemetry::trace::{SpanId, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, global};
use opentelemetry_sdk::trace::SpanData;
use tracewire_core::messaging::Outcome;

use crate::Capture;

/// What the handler of a scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Returns `Ok(())`.
    Succeed,
    /// Returns `Err(HandlerFailed)`.
    Fail,
    /// Panics.
    Panic,
    /// Never completes: the processing future is dropped.
    Cancel,
}

/// The error a failing handler returns (`error.type = HandlerFailed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerFailed;

impl fmt::Display for HandlerFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("handler failed")
    }
}

impl std::error::Error for HandlerFailed {}

impl Handler {
    /// The handler as a future, for [`Broker::process`] implementations: `Succeed` and `Fail`
    /// complete at once, `Panic` panics when polled, `Cancel` never completes.
    pub async fn run(self) -> Result<(), HandlerFailed> {
        match self {
            Handler::Succeed => Ok(()),
            Handler::Fail => Err(HandlerFailed),
            Handler::Panic => panic!("handler bug"),
            Handler::Cancel => std::future::pending().await,
        }
    }
}

/// A broker integration under test: a producer and a consumer on fresh destinations, the
/// consumer given a retry policy of 2 attempts (a short backoff) with a dead-letter
/// destination.
pub trait Broker {
    /// The `messaging.system` value.
    fn system(&self) -> &'static str;

    /// The work, retry and dead-letter destination names, for [`SpanShape::name`].
    fn destinations(&self) -> [&str; 3];

    /// Publishes one message to the work destination, as a child of the current context.
    fn publish(&mut self, body: &'static [u8]) -> impl Future<Output = ()>;

    /// Receives the next message (from the work or the retry destination) and processes it
    /// with `handler`. Returns the outcome it was settled with, `None` when the handler
    /// panicked or its processing was cancelled (dropped after a short while).
    fn process(&mut self, handler: Handler) -> impl Future<Output = Option<Outcome>>;

    /// Receives the next `n` messages and processes them as one batch with `handler`.
    fn process_batch(
        &mut self,
        n: usize,
        handler: Handler,
    ) -> impl Future<Output = Option<Outcome>>;
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One publish inside a request span.
    Publish,
    /// Publish, then process successfully.
    ProcessOk,
    /// Publish, then a failing handler: retried through the policy.
    Error,
    /// Publish, then a panicking handler: nothing settled.
    Panic,
    /// Publish, then processing dropped before it completes: nothing settled.
    Cancel,
    /// Publish, a failing attempt, then a successful retry.
    Retry,
    /// Publish, then both allowed attempts fail: the message is dead-lettered.
    DeadLetter,
    /// Three publishes processed as one batch.
    Batch,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::Publish,
        Scenario::ProcessOk,
        Scenario::Error,
        Scenario::Panic,
        Scenario::Cancel,
        Scenario::Retry,
        Scenario::DeadLetter,
        Scenario::Batch,
    ];
}

/// A span reduced to what must be the same on every broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpanShape {
    /// The name, with the destination replaced by its role (`publish {work}` becomes
    /// `{operation} {work}`: operation names differ per system, by the conventions).
    pub name: String,
    /// The parent's shape name (`-` for a root, `remote` for a parent outside the scenario).
    pub parent: String,
    /// `Producer`, `Consumer`, `Internal`, …
    pub kind: String,
    /// `unset`, `ok`, or `error: {description}`.
    pub status: String,
    /// Event names with their attribute keys.
    pub events: Vec<String>,
    /// Attribute keys, and `key=value` for the keys whose values must agree.
    pub attributes: BTreeSet<String>,
    /// Every link's attribute keys (same filtering).
    pub links: Vec<BTreeSet<String>>,
}

/// Attributes whose values must be the same on every broker.
const COMPARED_VALUES: [&str; 5] = [
    "messaging.operation.type",
    "messaging.message.outcome",
    "error.type",
    "messaging.message.attempt",
    "messaging.batch.message_count",
];

/// Whether `key` is one of a broker's own attributes, left out of the comparison.
fn broker_own(key: &str) -> bool {
    key.starts_with("messaging.rabbitmq.")
        || key.starts_with("messaging.kafka.")
        // Kafka's partition: the conventions define it for partitioned brokers only.
        || key == "messaging.destination.partition.id"
}

fn keys(attributes: &[opentelemetry::KeyValue]) -> BTreeSet<String> {
    attributes
        .iter()
        .filter(|kv| !broker_own(kv.key.as_str()))
        .map(|kv| {
            if COMPARED_VALUES.contains(&kv.key.as_str()) {
                format!("{}={}", kv.key, kv.value)
            } else {
                kv.key.to_string()
            }
        })
        .collect()
}

/// Plays `scenario` on `broker`, checks what every broker must do (outcomes, statuses), and
/// returns the shapes of the spans it recorded, sorted.
pub async fn run<B: Broker>(
    scenario: Scenario,
    capture: &Capture,
    broker: &mut B,
) -> Vec<SpanShape> {
    let before = capture.spans().len();
    let request = Context::current_with_span(global::tracer("conformance").start("request"));
    match scenario {
        Scenario::Publish => publish(broker, &request, b"one").await,
        Scenario::ProcessOk => {
            publish(broker, &request, b"one").await;
            assert_eq!(broker.process(Handler::Succeed).await, Some(Outcome::Ack));
        }
        Scenario::Error => {
            publish(broker, &request, b"one").await;
            assert_eq!(broker.process(Handler::Fail).await, Some(Outcome::Retry));
        }
        Scenario::Panic => {
            publish(broker, &request, b"one").await;
            assert_eq!(broker.process(Handler::Panic).await, None);
        }
        Scenario::Cancel => {
            publish(broker, &request, b"one").await;
            assert_eq!(broker.process(Handler::Cancel).await, None);
        }
        Scenario::Retry => {
            publish(broker, &request, b"one").await;
            assert_eq!(broker.process(Handler::Fail).await, Some(Outcome::Retry));
            assert_eq!(broker.process(Handler::Succeed).await, Some(Outcome::Ack));
        }
        Scenario::DeadLetter => {
            publish(broker, &request, b"one").await;
            assert_eq!(broker.process(Handler::Fail).await, Some(Outcome::Retry));
            assert_eq!(
                broker.process(Handler::Fail).await,
                Some(Outcome::DeadLetter)
            );
        }
        Scenario::Batch => {
            for body in [&b"one"[..], b"two", b"three"] {
                publish(broker, &request, body).await;
            }
            assert_eq!(
                broker.process_batch(3, Handler::Succeed).await,
                Some(Outcome::Ack)
            );
        }
    }
    request.span().end();
    let spans: Vec<SpanData> = capture.spans().into_iter().skip(before).collect();
    shapes(&spans, broker.system(), broker.destinations())
}

async fn publish<B: Broker>(broker: &mut B, request: &Context, body: &'static [u8]) {
    opentelemetry::context::FutureExt::with_context(broker.publish(body), request.clone()).await;
}

fn shapes(spans: &[SpanData], system: &str, destinations: [&str; 3]) -> Vec<SpanShape> {
    let roles = ["{work}", "{retry}", "{dead_letter}"];
    let name_of = |span: &SpanData| -> String {
        let name = span.name.as_ref();
        for (destination, mut role) in destinations.iter().zip(roles) {
            // A retried message is consumed from the work queue on RabbitMQ (the delay queue
            // dead-letters it back) and from the retry topic on Kafka: either way it is the
            // work's consumer that processes it.
            if role == "{retry}" && span.span_kind == opentelemetry::trace::SpanKind::Consumer {
                role = "{work}";
            }
            if let Some(operation) = name.strip_suffix(&format!(" {destination}")) {
                let declared = crate::attrs::find(&span.attributes, "messaging.operation.name");
                return if declared.map(|v| v.to_string()).as_deref() == Some(operation) {
                    format!("{{operation}} {role}")
                } else {
                    format!("{operation} {role}")
                };
            }
        }
        name.to_owned()
    };
    let by_id: BTreeMap<u64, String> = spans
        .iter()
        .map(|s| {
            (
                u64::from_be_bytes(s.span_context.span_id().to_bytes()),
                name_of(s),
            )
        })
        .collect();
    let mut shapes: Vec<SpanShape> = spans
        .iter()
        .map(|span| {
            if let Some(sys) = crate::attrs::find(&span.attributes, "messaging.system") {
                assert_eq!(sys.to_string(), system, "span {:?}", span.name);
            }
            SpanShape {
                name: name_of(span),
                parent: if span.parent_span_id == SpanId::INVALID {
                    "-".to_owned()
                } else {
                    by_id
                        .get(&u64::from_be_bytes(span.parent_span_id.to_bytes()))
                        .cloned()
                        .unwrap_or_else(|| "remote".to_owned())
                },
                kind: format!("{:?}", span.span_kind),
                status: match &span.status {
                    Status::Unset => "unset".to_owned(),
                    Status::Ok => "ok".to_owned(),
                    Status::Error { description } => format!("error: {description}"),
                },
                events: span
                    .events
                    .iter()
                    .map(|e| {
                        let keys: Vec<String> = keys(&e.attributes).into_iter().collect();
                        format!("{}({})", e.name, keys.join(","))
                    })
                    .collect(),
                attributes: keys(&span.attributes),
                links: span.links.iter().map(|l| keys(&l.attributes)).collect(),
            }
        })
        .collect();
    shapes.sort();
    shapes
}

/// The messaging metrics `system` recorded: every `(instrument, attribute keys)` pair, with the
/// `error.type` values. (`messaging.operation.type` values differ by the conventions: RabbitMQ
/// pushes deliveries, `process`; Kafka consumers poll, `receive`.)
pub fn metric_shape(capture: &Capture, system: &str) -> BTreeSet<String> {
    capture
        .metrics()
        .into_iter()
        .filter(|p| p.name.starts_with("messaging.") && p.attr("messaging.system") == Some(system))
        .map(|p| {
            let keys: Vec<String> = p
                .attributes
                .iter()
                .filter(|(k, _)| !broker_own(k))
                .map(|(k, v)| {
                    if k == "error.type" {
                        format!("{k}={v}")
                    } else {
                        k.clone()
                    }
                })
                .collect();
            format!("{} {{{}}}", p.name, keys.join(", "))
        })
        .collect()
}
